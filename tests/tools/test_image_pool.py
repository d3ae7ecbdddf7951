"""Images decoded in child processes (tools.image_pool): the same answers and refusals as in-process decoding, the
decoding memory outside the caller, and a pool that survives a decoder that dies."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from policies import InputError
from tools.image_pool import DecodePool
from tools.images import ImageLimits, decode_image, thumbnail


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def pool() -> Iterator[DecodePool]:
    made = DecodePool(2)
    yield made
    made.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident size
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_the_thumbnail_is_the_one_made_in_process(pool: DecodePool) -> None:
    data = png(Image.radial_gradient("L").resize((900, 600)).convert("RGB"), "JPEG")
    thumb, metadata = pool.check(data, ImageLimits())
    assert thumb == thumbnail(decode_image(data, draft=(256, 256)))
    assert metadata == {}
    with Image.open(io.BytesIO(thumb)) as small:
        assert max(small.size) == 256


def test_refusals_come_back_with_their_reason(pool: DecodePool) -> None:
    data = png(Image.new("RGB", (64, 64), "red"))
    with pytest.raises(InputError, match="truncated or corrupt"):
        pool.check(data[: len(data) // 2], ImageLimits())
    with pytest.raises(InputError, match="not an image"):
        pool.check(b"plain text, no image", ImageLimits())
    with pytest.raises(InputError, match=r"claims 64 x 64 pixels; the limit is 1000"):
        pool.check(data, ImageLimits(max_pixels=1000))
    assert pool.check(data, ImageLimits())[0]  # the child that refused them still works


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_large_decode_costs_the_child_not_the_caller(pool: DecodePool) -> None:
    bomb = png(Image.new("RGBA", (4000, 4000), (1, 2, 3, 255)))  # small file, 64 MB decoded
    before = rss_kib(os.getpid())
    pool.check(bomb, ImageLimits())
    assert rss_kib(os.getpid()) - before < 32 * 1024  # the caller never held the decoded pixels
    assert max(rss_kib(pid) for pid in pool.pids()) > 60 * 1024  # the child did


def wait_dead(pid: int) -> None:
    """Until ``pid`` is a zombie or gone (its parent, the pool, has not reaped it yet)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return
        except (OSError, IndexError):
            return
        time.sleep(0.01)  # polling a condition, with a generous deadline: not a timing assumption
    raise AssertionError(f"process {pid} did not die")


def test_a_dead_decoder_is_replaced() -> None:
    pool = DecodePool(1)
    try:
        data = png(Image.new("RGB", (32, 32), "blue"))
        first = pool.check(data, ImageLimits())
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)
        assert pool.check(data, ImageLimits()) == first
        assert pool.pids() != [pid]
    finally:
        pool.close()


def test_children_are_recycled_after_their_task_count() -> None:
    pool = DecodePool(1, tasks_per_process=2)
    try:
        data = png(Image.new("RGB", (32, 32), "green"))
        pids = []
        for _ in range(3):
            pool.check(data, ImageLimits())
            pids += pool.pids()
        assert pids[0] == pids[1] != pids[2]
    finally:
        pool.close()
