"""Decoding untrusted images in a few child processes: bounded memory and no GIL taken from the caller.

A full decode of a large image (a 155 KB PNG can decode to 6324 x 6324 RGBA, 160 MB) costs a second of CPU, much of
it holding the GIL, and leaves the allocator's arenas fragmented: in a server's request threads it delayed every other
request and grew the process by gigabytes under load. :class:`DecodePool` runs :mod:`tools.image_worker` in at most
``processes`` children, one image at a time each (the rest of the callers wait for a free child: this is the decode
semaphore). A child is replaced after ``tasks_per_process`` images (the memory it fragmented goes back to the system),
when it dies (its caller gets an :class:`InputError`: the image killed its decoder), and when one image takes longer
than ``timeout_seconds`` (killed; an :class:`InputError` too). Children start on first use and end with the pool, or
by themselves when the parent's end of their pipe closes (the parent died).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from policies.exceptions import InputError
from tools.image_worker import read_frame, write_frame
from tools.images import ImageLimits

ROOT = str(Path(__file__).resolve().parent.parent)


class _Child:
    def __init__(self) -> None:
        env = dict(os.environ)  # the child imports this package from where the parent found it
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.image_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.tasks = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, data: bytes, limits: ImageLimits, timeout: float) -> tuple[dict[str, Any], bytes] | None:
        """The child's answer, or None when it died or was killed for taking longer than ``timeout``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.tasks += 1
        killer = threading.Timer(timeout, self.proc.kill)
        killer.start()
        try:
            write_frame(self.proc.stdin, {"max_pixels": limits.max_pixels, "max_bytes": limits.max_bytes,
                                          "formats": list(limits.formats)}, data)
            return read_frame(self.proc.stdout)
        except (OSError, ValueError):  # a broken pipe, or a garbled answer from a dying child
            return None
        finally:
            killer.cancel()

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class DecodePool:
    """``check(data, limits)``: (thumbnail bytes, EXIF metadata) of an image decoded in a child process."""

    def __init__(self, processes: int = 2, *, tasks_per_process: int = 50, timeout_seconds: float = 60.0) -> None:
        self.tasks_per_process = tasks_per_process
        self.timeout_seconds = timeout_seconds
        self._slots: queue.Queue[_Child | None] = queue.Queue()
        for _ in range(processes):
            self._slots.put(None)  # started on first use

    def _ready(self, child: _Child | None) -> _Child:
        if child is not None and child.alive() and child.tasks < self.tasks_per_process:
            return child
        if child is not None:
            child.close()
        return _Child()

    def check(self, data: bytes, limits: ImageLimits) -> tuple[bytes, dict[str, Any]]:
        """Decode ``data`` fully under ``limits`` (see :func:`tools.images.decode_image`); InputError saying why
        when it is refused, kills its decoder or takes longer than ``timeout_seconds``."""
        child = self._slots.get()
        try:
            child = self._ready(child)
            answer = child.call(data, limits, self.timeout_seconds)
        except BaseException:
            if child is not None:
                child.close()
            self._slots.put(None)
            raise
        if answer is None:
            code = child.proc.poll()
            child.close()
            self._slots.put(None)
            raise InputError(f"image could not be decoded: its decoder stopped (exit code {code}) or took longer "
                             f"than {self.timeout_seconds:g}s")
        self._slots.put(child)
        header, body = answer
        if "error" in header:
            raise InputError(str(header["error"]))
        metadata = header.get("metadata")
        return body, dict(metadata) if isinstance(metadata, dict) else {}

    def pids(self) -> list[int]:
        """The process ids of the idle children that are running (for monitoring and tests)."""
        idle = self._take_idle()
        try:
            return [child.proc.pid for child in idle if child is not None and child.alive()]
        finally:
            for child in idle:
                self._slots.put(child)

    def _take_idle(self) -> list[_Child | None]:
        idle: list[_Child | None] = []
        while True:
            try:
                idle.append(self._slots.get_nowait())
            except queue.Empty:
                return idle

    def close(self) -> None:
        """End the idle children (the pool stays usable: children start again on the next check)."""
        for child in self._take_idle():
            if child is not None:
                child.close()
            self._slots.put(None)
