"""Decoding untrusted image bytes with Pillow under limits, EXIF metadata, thumbnails.

:func:`decode_image` refuses, with an :class:`InputError` that says why: empty input, more bytes than
``max_bytes``, anything that is not an image of an allowed format, more pixels than ``max_pixels``
(checked from the header, before any pixel is decoded: a 1 KB PNG claiming 20,000 x 20,000 pixels
costs nothing), and truncated or corrupt files. It applies the EXIF orientation. :func:`open_image` does the
checks that need only the header (workers screen stored bytes with it before any tool decodes them).
:func:`exif_metadata` turns EXIF ``DateTimeOriginal`` and GPS into item metadata (``time``, ``lat``, ``lon``),
so a photo can go to the weather tool.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from policies.exceptions import InputError

DEFAULT_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 20 * 2**20
THUMBNAIL = (256, 256)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    formats: tuple[str, ...] = DEFAULT_FORMATS


def open_image(data: bytes | None, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """The image with only its header read: size, format and pixel count checked, no pixel decoded.

    :class:`InputError` (saying why) for empty input, too many bytes, a non-image or a format not allowed, and
    more pixels than ``limits.max_pixels`` (a decompression bomb costs nothing here)."""
    if not data:
        raise InputError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except UnidentifiedImageError:
        raise InputError(f"not an image, or not one of the allowed formats ({', '.join(limits.formats)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own (higher) limit
        raise InputError(_too_many(exc, limits)) from None
    except (OSError, ValueError, SyntaxError) as exc:  # a header Pillow recognised but cannot parse
        raise InputError(f"image data is truncated or corrupt ({exc})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InputError(f"image claims {width} x {height} pixels; the limit is {limits.max_pixels} pixels "
                         "(possible decompression bomb)")
    if width < 1 or height < 1:
        raise InputError(f"image claims {width} x {height} pixels; nothing to show")
    return image


def _too_many(exc: Exception, limits: ImageLimits) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{found.group(1)} pixels" if found else "too many pixels"
    return f"image claims {claimed}; the limit is {limits.max_pixels} pixels (possible decompression bomb)"


def decode_image(data: bytes | None, limits: ImageLimits = ImageLimits(), *,
                 draft: tuple[int, int] | None = None) -> Image.Image:
    """A fully decoded, EXIF-oriented image, or :class:`InputError` naming the problem (see :func:`open_image`;
    also truncated or corrupt data). ``draft`` lets JPEG decode at a reduced scale no smaller than that size:
    every byte is still decoded (truncation is still detected) at a fraction of the memory."""
    image = open_image(data, limits)
    if draft is not None and image.format == "JPEG":
        image.draft("RGB" if image.mode not in ("L", "RGB") else image.mode, draft)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # e.g. a later GIF frame
        raise InputError(_too_many(exc, limits)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise InputError(f"image data is truncated or corrupt ({exc})") from None
    exif = image.getexif()
    oriented = ImageOps.exif_transpose(image) or image
    if oriented is not image:
        oriented.info["exif_source"] = exif
    return oriented


def exif_metadata(image: Image.Image) -> dict[str, Any]:
    """``time`` (from DateTimeOriginal, ISO 8601), ``lat``/``lon`` (from GPS) when the image has them."""
    exif = image.info.get("exif_source") or image.getexif()
    out: dict[str, Any] = {}
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        original = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
        if isinstance(original, str) and len(original) >= 19:
            out["time"] = original[:10].replace(":", "-") + "T" + original[11:19]
            offset = sub.get(ExifTags.Base.OffsetTimeOriginal)  # the camera's UTC offset, when it wrote one
            if isinstance(offset, str) and re.fullmatch(r"[+-]\d\d:\d\d", offset.strip()):
                out["time"] += offset.strip()
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "S")
        lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), "W")
        if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180:
            out["lat"], out["lon"] = round(lat, 6), round(lon, 6)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass
    return out


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    if not dms or len(dms) != 3:
        return None
    value = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
    return -value if isinstance(ref, str) and ref.upper().startswith(negative) else value


def thumbnail(image: Image.Image, size: tuple[int, int] = THUMBNAIL) -> bytes:
    """A thumbnail for reviewers (aspect ratio kept, at most ``size``): JPEG, or PNG when the image has
    transparency or is small enough that PNG is lossless and tiny (e.g. 28 x 28 digits). Reduced first by a whole
    factor (``Image.reduce``, box averaging, a fraction of a full-size copy's memory), then resized."""
    factor = max(1, min(image.width // max(1, size[0]), image.height // max(1, size[1])))
    thumb = image.reduce(factor) if factor > 1 and image.mode not in ("1", "P", "I;16") else image.copy()
    thumb.thumbnail(size)
    out = io.BytesIO()
    transparent = thumb.mode in ("RGBA", "LA", "PA") or (thumb.mode == "P" and "transparency" in thumb.info)
    if transparent or thumb.width * thumb.height <= 64 * 64:
        if thumb.mode not in ("RGB", "RGBA", "L", "LA"):
            thumb = thumb.convert("RGBA" if transparent else "RGB")
        thumb.save(out, format="PNG")
    else:
        thumb.convert("L" if thumb.mode in ("1", "L", "I", "I;16", "F") else "RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


def thumbnail_media_type(data: bytes) -> str:
    """``image/png`` or ``image/jpeg`` for bytes made by :func:`thumbnail`."""
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
