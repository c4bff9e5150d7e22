"""Attention heat maps as a PNG image, drawn with Pillow (an optional dependency: `lookinside[png]`).

The colours and the mask match the terminal view: dark blue (0) to yellow (1),
masked cells in flat grey; a colour scale under the title says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lookinside.core.errors import LookinsideError
from lookinside.ui.attention import heat_rgb

if TYPE_CHECKING:
    from lookinside.core.inside.attention import AttentionMaps

MASK_RGB = (200, 200, 200)
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
TOP = 100  # room for the title, the colour scale and the head labels
SCALE = (8, 30, 208, 42)  # the colour scale's bar: left, top, right, bottom


def require_pillow() -> Any:
    """Pillow's modules, or one clear error naming the extra that installs it."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise LookinsideError("--png needs Pillow, which is not installed: pip install 'lookinside[png]'") from None
    return Image, ImageDraw, ImageFont


def label(piece: str) -> str:
    """A token piece in characters any font has: spaces as _, newlines as \\n."""
    text = piece.replace("▁", "_").replace(" ", "_").replace("\n", "\\n").replace("\t", "\\t")
    return text.encode("ascii", "backslashreplace").decode("ascii")[:14]


def _draw_map(draw: Any, maps: AttentionMaps, head: int, left: int, top: int, cell: int) -> None:
    for q, row in enumerate(maps.weights[head]):
        for k, weight in enumerate(row):
            colour = MASK_RGB if maps.masked(q, k) else heat_rgb(weight)
            x, y = left + k * cell, top + q * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)


def _draw_scale(draw: Any, font: Any) -> None:
    """The colour scale: the weights 0 to 1 as the cells show them, and the masked cells' grey."""
    left, top, right, bottom = SCALE
    for x in range(left, right + 1):
        draw.line([x, top, x, bottom], fill=heat_rgb((x - left) / (right - left)))
    for value in (0, 0.5, 1):
        x = left + value * (right - left)
        draw.line([x, bottom, x, bottom + 3], fill=INK)
        draw.text((x - 6 if value else x, bottom + 4), f"{value:g}", fill=INK, font=font)
    draw.text((right + 12, top - 1), "attention weight", fill=INK, font=font)
    mask_left = right + 140
    draw.rectangle([mask_left, top, mask_left + 12, bottom], fill=MASK_RGB)
    draw.text((mask_left + 18, top - 1), "masked (a later token)", fill=INK, font=font)


def render_png(maps: AttentionMaps) -> Any:
    """One head with token labels, or every head in a grid; returns a PIL image."""
    image_mod, draw_mod, font_mod = require_pillow()
    font = font_mod.load_default(size=12) if hasattr(font_mod, "load_default") else None
    n = len(maps.tokens)
    names = [f"{i} {label(t.piece)}" for i, t in enumerate(maps.tokens)]
    margin = 8 + 7 * max(len(s) for s in names)
    heads = sorted(maps.weights)
    if not heads:
        raise LookinsideError(f"{n} tokens are too many to draw every head: pick one with --head")
    cell = max(6, min(36, 640 // max(n, 1))) if maps.head is not None else max(3, min(16, 160 // max(n, 1)))
    cols = 1 if maps.head is not None else min(len(heads), 8)
    rows = -(-len(heads) // cols)
    size = n * cell
    title = f"{maps.model}  layer {maps.layer}  " + (f"head {maps.head}" if maps.head is not None else "all heads")
    title += "  (rows: queries, columns: keys; grey: masked)"
    title_width = int(draw_mod.Draw(image_mod.new("RGB", (1, 1))).textlength(title, font=font)) + 16
    scale_width = SCALE[2] + 320  # the bar, its caption and the masked swatch
    width, height = max(margin + cols * (size + 16) + 8, title_width, scale_width), TOP + rows * (size + 40)
    image = image_mod.new("RGB", (width, height), BACKGROUND)
    draw = draw_mod.Draw(image)
    draw.text((8, 8), title, fill=INK, font=font)
    _draw_scale(draw, font)
    for slot, head in enumerate(heads):
        left = margin + (slot % cols) * (size + 16)
        top = TOP + (slot // cols) * (size + 40)
        draw.text((left, top - 30), f"head {head}", fill=INK, font=font)
        _draw_map(draw, maps, head, left, top, cell)
        for k in range(n) if cell >= 16 else ():  # key numbers over the columns, when they fit
            draw.text((left + k * cell + cell // 3, top - 15), str(k), fill=INK, font=font)
        if slot % cols == 0 and cell >= 10:
            for q, name in enumerate(names):
                draw.text((8, top + q * cell + (cell - 12) // 2), name, fill=INK, font=font)
    return image


def save_png(maps: AttentionMaps, path: Any) -> None:
    """Render and write; an unwritable path is the user's mistake, said in one line."""
    image = render_png(maps)
    try:
        image.save(path, format="PNG")
    except OSError as exc:
        raise LookinsideError(f"cannot write {path}: {exc.strerror or exc}") from None
