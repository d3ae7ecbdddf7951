"""Image files built in the tests: real encodings from Pillow, a PNG that lies about its size, EXIF photos."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)  # type: ignore[arg-type]
    return out.getvalue()


def png(width: int = 32, height: int = 24, color: str = "navy") -> bytes:
    return encode(Image.new("RGB", (width, height), color))


def noisy_jpeg(width: int = 320, height: int = 240, **save: object) -> bytes:
    """A JPEG with detail (noise), so that cutting it leaves most of the picture undecoded."""
    return encode(Image.effect_noise((width, height), 60).convert("RGB"), "JPEG", **save)


def png_claiming(width: int, height: int, color_type: int = 0) -> bytes:
    """A small, well-formed PNG header claiming ``width`` x ``height`` pixels over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    idat = zlib.compress(b"\0" * 2000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo_with_exif(
    width: int = 640,
    height: int = 480,
    *,
    orientation: int = 6,
    taken: str = "2021:08:29 16:55:00",
    lat: tuple[str, tuple[float, float, float]] = ("N", (29.0, 57.0, 0.0)),
    lon: tuple[str, tuple[float, float, float]] = ("W", (90.0, 4.0, 30.0)),
) -> bytes:
    """A JPEG as a phone writes it: stored landscape with an orientation tag, DateTimeOriginal and GPS."""
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: rotate 90 degrees clockwise to display
    exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = lat[0], lat[1], lon[0], lon[1]
    image = Image.new("RGB", (width, height), "white")
    image.paste((200, 0, 0), (0, 0, width // 4, height))  # a red band on the left of the stored picture
    return encode(image, "JPEG", exif=exif, quality=90)
