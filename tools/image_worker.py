"""The child side of :class:`tools.image_pool.DecodePool`: ``python -m tools.image_worker`` checks images until its
standard input ends.

Protocol (both directions): a 4-byte big-endian length, a JSON header of that length, then ``header["bytes"]`` raw
bytes. A request's header holds the :class:`~tools.images.ImageLimits` (``max_pixels``, ``max_bytes``, ``formats``)
and its raw bytes are the image file. The answer's header is ``{"metadata": {...}}`` with the thumbnail as its raw
bytes, or ``{"error": "why"}`` (an :class:`InputError`'s message) with none. Only this module imports the decoding
code in the child: it starts in a fraction of a second and holds little memory between images.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import IO, Any

from policies.exceptions import InputError
from tools.images import THUMBNAIL, ImageLimits, decode_image, exif_metadata, thumbnail

HEADER_MAX = 1 << 20
NICENESS = 10  # decoding is batch work: the API process that waits for it comes first on a busy machine


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """One (header, raw bytes) frame, or None at the end of the stream (or a frame cut short)."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    if size > HEADER_MAX:
        return None
    raw = stream.read(size)
    if len(raw) < size:
        return None
    header = json.loads(raw)
    if not isinstance(header, dict):
        return None
    body = stream.read(int(header.get("bytes", 0)))
    if len(body) < int(header.get("bytes", 0)):
        return None
    return header, body


def write_frame(stream: IO[bytes], header: dict[str, Any], body: bytes = b"") -> None:
    raw = json.dumps({**header, "bytes": len(body)}).encode()
    stream.write(len(raw).to_bytes(4, "big") + raw + body)
    stream.flush()


def check(header: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    """Decode ``data`` fully under the request's limits, then its EXIF metadata and thumbnail."""
    limits = ImageLimits(max_pixels=int(header["max_pixels"]), max_bytes=int(header["max_bytes"]),
                         formats=tuple(str(f) for f in header["formats"]))
    try:
        image = decode_image(data, limits, draft=THUMBNAIL)  # JPEG: every byte decoded, a fraction of the memory
        try:
            return {"metadata": exif_metadata(image)}, thumbnail(image)
        finally:
            image.close()
    except InputError as exc:
        return {"error": str(exc)}, b""
    except MemoryError:
        return {"error": "image is too large to decode in the memory available"}, b""


def main() -> int:
    with contextlib.suppress(OSError):  # already as low as it goes
        os.nice(NICENESS)
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # nothing but answers on the answer pipe
    while (frame := read_frame(requests)) is not None:
        header, body = check(*frame)
        write_frame(answers, header, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
