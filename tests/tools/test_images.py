"""Image decoding under limits, EXIF metadata, thumbnails, and the learned image classifier."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from policies import InputError
from policies.model import ImageClassifierSpec
from tools.base import Batch, Item, ToolContext, TrainingSet
from tools.image_classifier import ImageClassifier
from tools.images import ImageLimits, decode_image, exif_metadata, thumbnail, thumbnail_media_type


def png_bytes(image: Image.Image, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=save.pop("format", "PNG"), **save)  # type: ignore[arg-type]
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 2000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bomb_png_is_refused_before_decoding() -> None:
    data = png_claiming(20_000, 20_000)
    assert len(data) < 1024
    with pytest.raises(InputError, match=r"^image claims 400000000 pixels; the limit is 40000000 pixels \(possible "
                                         r"decompression bomb\)$"):  # Pillow's own check (over twice its limit)
        decode_image(data)
    with pytest.raises(InputError, match=r"^image claims 8000 x 8000 pixels; the limit is 40000000 pixels"):
        decode_image(png_claiming(8000, 8000))  # ours, from the header
    with pytest.raises(InputError, match=r"claims 300 x 300 pixels; the limit is 1000"):
        decode_image(png_claiming(300, 300), ImageLimits(max_pixels=1000))


def test_truncated_jpeg_text_file_and_empty_input_are_refused() -> None:
    jpeg = png_bytes(Image.new("RGB", (64, 64), "red"), format="JPEG")
    with pytest.raises(InputError, match="truncated or corrupt"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(InputError, match="not an image"):
        decode_image(b"just some text pretending to be a .png\n")
    with pytest.raises(InputError, match="empty"):
        decode_image(b"")
    with pytest.raises(InputError, match="not one of the allowed formats"):
        decode_image(jpeg, ImageLimits(formats=("PNG",)))
    with pytest.raises(InputError, match="bytes; the limit is 10"):
        decode_image(jpeg, ImageLimits(max_bytes=10))


def test_exif_orientation_time_and_gps() -> None:
    image = Image.new("L", (40, 20), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif.get_ifd(0x8769)[0x9003] = "2021:08:29 16:55:00"  # DateTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (29.0, 9.0, 0.0), "W", (90.0, 6.0, 0.0)
    decoded = decode_image(png_bytes(image, format="JPEG", exif=exif))
    assert decoded.size == (20, 40)
    meta = exif_metadata(decoded)
    assert meta["time"] == "2021-08-29T16:55:00"
    assert meta["lat"] == pytest.approx(29.15) and meta["lon"] == pytest.approx(-90.1)
    exif.get_ifd(0x8769)[0x9011] = "-05:00"  # OffsetTimeOriginal
    with_offset = exif_metadata(decode_image(png_bytes(image, format="JPEG", exif=exif)))
    assert with_offset["time"] == "2021-08-29T16:55:00-05:00"


def test_thumbnail_keeps_aspect_ratio() -> None:
    data = thumbnail(decode_image(png_bytes(Image.new("RGB", (1000, 500)))))
    thumb = Image.open(io.BytesIO(data))
    assert thumb.size == (256, 128) and thumb.format == "JPEG" and thumbnail_media_type(data) == "image/jpeg"
    small = thumbnail(decode_image(png_bytes(Image.new("L", (28, 28)))))  # tiny digits stay lossless
    assert Image.open(io.BytesIO(small)).format == "PNG" and thumbnail_media_type(small) == "image/png"
    alpha = Image.open(io.BytesIO(thumbnail(decode_image(png_bytes(Image.new("RGBA", (600, 300)))))))
    assert alpha.format == "PNG" and alpha.mode == "RGBA" and alpha.size == (256, 128)


def test_draft_decodes_jpeg_small_and_still_detects_truncation() -> None:
    jpeg = png_bytes(Image.effect_noise((2048, 1024), 64).convert("RGB"), format="JPEG")
    assert decode_image(jpeg, draft=(256, 256)).size == (512, 256)  # 1/4: the smallest scale with both sides >= 256
    with pytest.raises(InputError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2], draft=(256, 256))


def digits() -> tuple[list[Item], np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    items = [Item(f"d{i}", image=png_bytes(Image.fromarray((img * 16).clip(0, 255).astype(np.uint8))))
             for i, img in enumerate(data.images)]
    return items, data.target


def test_image_classifier_learns_digits_and_abstains_on_bad_images() -> None:
    items, y = digits()
    labels = tuple(str(d) for d in range(10))
    tool = ImageClassifier(ImageClassifierSpec(name="img"), labels)
    ctx = ToolContext(labels)
    assert asyncio.run(tool.predict(Batch(items[:3]), ctx)).abstain.all()  # untrained
    train, test = slice(0, 1200), slice(1200, None)
    info = tool.fit(TrainingSet(Batch(items[train]), y[train], labels))
    assert info.version == "img-v1" and info.trained_on == 1200
    bad = [Item("bad", image=b"not an image"), Item("none")]
    votes = asyncio.run(tool.predict(Batch(items[test] + bad), ctx))
    accuracy = (votes.probs[:-2].argmax(axis=1) == y[test]).mean()
    assert accuracy > 0.93
    assert votes.abstain[-2:].all() and not votes.abstain[:-2].any()
    assert "not an image" in votes.evidence[-2] and "empty" in votes.evidence[-1]
    assert tool.fork().version == "img-v0"
