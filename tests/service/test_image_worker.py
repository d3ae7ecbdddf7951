"""Workers and stored images that bypassed the API: a decompression bomb is refused from its header (the item is
failed with the reason, never decoded) while the rest of its batch goes through the agent; memory stays bounded."""

from __future__ import annotations

import asyncio
import resource
import struct
import tracemalloc
import zlib

import numpy as np
from PIL import Image

from agent.runner import BatchLabeler
from policies import loads_policy
from policies.io import EXAMPLES_DIR
from service.runtime.cycle import ProjectWorker
from service.store import SqlStore
from tests.image_files import encode, noisy_jpeg
from tools.base import Batch, Item, TrainingSet
from tools.registry import build_tools

MB = 2**20


def real_bomb(width: int, height: int) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` black pixels: a small file that decodes to width * height * 4
    bytes in Pillow (built row by row, so the test itself never holds the raw pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # filter byte + RGB
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def digit(n: int) -> bytes:
    image = Image.new("L", (28, 28), 0)
    image.paste(255, (4 + n, 4, 10 + n, 24))
    return encode(image)


def test_a_stored_bomb_is_failed_from_its_header_and_the_batch_goes_on(store: SqlStore) -> None:
    policy = loads_policy((EXAMPLES_DIR / "mnist.yaml").read_text())
    store.projects.create_project(policy.project, policy)
    bomb = real_bomb(8000, 8000)  # 64 megapixels: under Pillow's own limit, over ours (40); 256 MB decoded
    assert len(bomb) < 300_000
    items = [Item(key=f"d{i}", image=digit(i)) for i in range(3)]
    items.insert(1, Item(key="bomb", image=bomb))
    items.append(Item(key="cut", image=noisy_jpeg()[:3000]))  # passes the header check: the tools decide about it
    store.items.ingest(policy.project, items)  # through the store: nothing validated it
    tools = build_tools(policy)
    train = [Item(f"t{i}", image=digit(i % 2 * 8)) for i in range(40)]  # a trained model decodes every image
    tools[0].fit(TrainingSet(Batch(train), np.array([i % 2 for i in range(40)]), tuple(policy.labels)))
    worker = ProjectWorker(store, policy.project, BatchLabeler(policy, tools), batch_size=16)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        outcome = asyncio.run(worker.process_batch())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before

    assert outcome.items == 4 and outcome.record is not None  # the bomb never reached the agent
    assert outcome.record.labeled + outcome.record.queued == 4
    failed = store.items.item_view(policy.project, "bomb").item
    assert failed.status == "failed"
    assert failed.error == (
        "image refused: image claims 8000 x 8000 pixels; the limit is 40000000 pixels (possible decompression bomb)"
    )
    for key in ("d0", "d1", "d2", "cut"):
        assert store.items.item_view(policy.project, key).item.status in ("labeled", "in_review"), key
    votes = {key: store.items.item_view(policy.project, key).votes[0].evidence for key in ("d0", "cut")}
    assert votes["d0"].startswith("image_classifier-v1: ")  # decoded and scored
    assert votes["cut"].startswith("image_classifier: image data is truncated or corrupt")  # abstained, saying why
    # decoding the bomb would take 256 MB of pixels; the whole batch stays far below that
    assert peak < 32 * MB, f"Python heap peak {peak / MB:.1f} MB"
    assert rss_growth < 128 * MB, f"peak RSS grew by {rss_growth / MB:.1f} MB"
