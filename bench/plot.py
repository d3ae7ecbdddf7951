"""Precision versus human reviews, one PNG per dataset, drawn with Pillow (no matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

W, H = 720, 480
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 40, 60
COLORS = {
    "manual": (120, 120, 120),
    "pre_annotation": (230, 120, 20),
    "audit_calibrated": (40, 110, 200),
    "labelagent": (200, 30, 60),
}


def precision_plot(path: Path, title: str, target: float,
                   points: Mapping[str, Sequence[tuple[float, float | None]]]) -> None:
    """``points``: strategy -> (human review share, auto precision) per seed; no precision -> drawn at the top."""
    ys = [p for pts in points.values() for _, p in pts if p is not None]
    y_lo = min([target, *ys]) if ys else target
    y_lo = max(0.0, min(y_lo - 0.01, 1.0 - 0.02))
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP

    def sx(v: float) -> float:
        return x0 + v * (x1 - x0)

    def sy(v: float) -> float:
        return y0 - (v - y_lo) / (1.0 - y_lo) * (y0 - y1)

    d.rectangle([x0, y1, x1, y0], outline="black")
    for i in range(6):
        v = i / 5
        d.line([sx(v), y0, sx(v), y0 + 5], fill="black")
        d.text((sx(v) - 10, y0 + 8), f"{v:.0%}", fill="black", font=font)
        pv = y_lo + (1.0 - y_lo) * i / 5
        d.line([x0 - 5, sy(pv), x0, sy(pv)], fill="black")
        d.text((x0 - 45, sy(pv) - 6), f"{pv:.3f}", fill="black", font=font)
    d.text(((x0 + x1) / 2 - 80, H - 25), "human reviews (share of stream)", fill="black", font=font)
    d.text((5, TOP - 25), "auto-label precision", fill="black", font=font)
    d.text(((x0 + x1) / 2 - 60, 8), title, fill="black", font=font)
    # The precision target, dashed.
    ty = sy(target)
    for xs in range(int(x0), int(x1), 12):
        d.line([xs, ty, min(xs + 6, x1), ty], fill=(0, 150, 0))
    d.text((x1 - 90, ty - 14), f"target {target:.2f}", fill=(0, 120, 0), font=font)
    for name, pts in points.items():
        color = COLORS.get(name, (0, 0, 0))
        for share, prec in pts:
            x, y = sx(share), sy(1.0 if prec is None else prec)
            hollow = prec is None  # no auto labels: drawn hollow at the top
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=None if hollow else color,
                      outline=color if hollow else "black", width=2 if hollow else 1)
    ly = TOP
    for name in points:
        color = COLORS.get(name, (0, 0, 0))
        d.ellipse([x1 + 15, ly + 2, x1 + 25, ly + 12], fill=color, outline="black")
        label = name.replace("_", "-") + (" (no auto labels)" if name == "manual" else "")
        d.text((x1 + 32, ly + 1), label, fill="black", font=font)
        ly += 22
    d.text((x1 + 15, ly + 4), "hollow: no auto labels", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
