"""Image grids and progression figures, as uint8 arrays and PNG files."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes

BACKGROUND = 255  # white around panels and behind labels


def grid_image(images: torch.Tensor, *, nrow: int = 8, scale: int = 1, padding: int = 2) -> np.ndarray:
    """uint8 [N, H, W] -> uint8 grey image [rows*(H+pad)*scale, nrow*(W+pad)*scale], pixels scaled up by
    nearest-neighbour repetition so digits stay crisp."""
    grid = make_grid(images.unsqueeze(1), nrow=nrow, padding=padding, pad_value=BACKGROUND)[0]  # [H', W']
    if scale > 1:
        grid = grid.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
    return grid.numpy().astype(np.uint8)


def label_font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def labelled_row(panels: Sequence[tuple[str, np.ndarray]], *, font_size: int = 14) -> np.ndarray:
    """Put panels side by side, each with its label centred above it: the progression figure."""
    gap, label_height = font_size, font_size * 2
    height = max(p.shape[0] for _, p in panels) + label_height + gap
    width = sum(p.shape[1] for _, p in panels) + gap * (len(panels) + 1)
    canvas = Image.new("L", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = label_font(font_size)
    x = gap
    for label, panel in panels:
        text_w = draw.textlength(label, font=font)
        draw.text((x + (panel.shape[1] - text_w) / 2, font_size // 3), label, fill=0, font=font)
        canvas.paste(Image.fromarray(panel), (x, label_height))
        x += panel.shape[1] + gap
    return np.asarray(canvas)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_png(image: np.ndarray, path: str | Path) -> None:
    atomic_write_bytes(path, png_bytes(image))


def select_epochs(epochs: Sequence[int], wanted: Sequence[int], what: str) -> list[int]:
    """Indices into the saved epochs for each wanted epoch; fail loudly when one was not saved."""
    index = {e: i for i, e in enumerate(epochs)}
    missing = [e for e in wanted if e not in index]
    if missing:
        raise GenlabError(
            f"{what}: epochs {missing} were not saved (saved: {epochs[0]}..{epochs[-1]});"
            " lower render.epochs or train for longer"
        )
    return [index[e] for e in wanted]
