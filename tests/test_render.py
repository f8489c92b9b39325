from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.errors import GenlabError
from genlab.render import grid_image, labelled_row, png_bytes, select_epochs


def test_grid_shape_and_scaling():
    images = torch.zeros(10, 28, 28, dtype=torch.uint8)
    g = grid_image(images, nrow=4, padding=2)
    # 3 rows x 4 columns of (28 + 2) plus the outer padding of 2.
    assert g.shape == (3 * 30 + 2, 4 * 30 + 2) and g.dtype == np.uint8
    g4 = grid_image(images, nrow=4, padding=2, scale=4)
    assert g4.shape == (g.shape[0] * 4, g.shape[1] * 4)
    assert np.array_equal(g4[::4, ::4], g)


def test_grid_keeps_pixel_values():
    images = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    g = grid_image(images, nrow=1, padding=0)
    assert np.array_equal(g, images[0].numpy())


def test_labelled_row_places_panels_side_by_side():
    a, b = np.zeros((20, 30), np.uint8), np.zeros((20, 40), np.uint8)
    row = labelled_row([("epoch 1", a), ("epoch 2", b)], font_size=10)
    assert row.shape[1] == 30 + 40 + 3 * 10
    assert row[:20].min() < 64  # the labels drew dark text in the label strip above the panels
    assert row.shape[0] >= 20 + 20


def test_png_is_deterministic_and_lossless():
    image = np.random.default_rng(0).integers(0, 256, (50, 60), dtype=np.uint8)
    assert png_bytes(image) == png_bytes(image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(image)))), image)


def test_select_epochs_fails_loudly():
    assert select_epochs([1, 2, 3, 4], [2, 4], "x") == [1, 3]
    with pytest.raises(GenlabError, match=r"epochs \[5\] were not saved"):
        select_epochs([1, 2, 3, 4], [2, 5], "x")
