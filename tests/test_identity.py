from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.identity import CHANGED, Identities, grid_animation, identity_strips, read_identities


def identities(rows: list[list[int]], asked: list[int] | None = None) -> Identities:
    """rows[e][n]: input n's digit at epoch e + 1."""
    digits = torch.tensor(rows)
    return Identities(
        epochs=list(range(1, digits.shape[0] + 1)),
        digits=digits,
        confidence=torch.full(digits.shape, 0.5),
        asked=None if asked is None else torch.tensor(asked),
    )


# Four inputs over five epochs. Input 0 never changes; 1 settles at epoch 2; 2 goes 0 -> 8 -> 5 (settles at 4);
# 3 changes at every epoch.
FOUR = identities([[3, 1, 0, 1], [3, 7, 0, 2], [3, 7, 8, 1], [3, 7, 5, 2], [3, 7, 5, 1]])


def test_flips_are_the_share_of_inputs_whose_digit_changed_since_the_previous_epoch():
    rows = FOUR.per_epoch()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert "identity_flips" not in rows[0]  # nothing to compare the first epoch with
    assert [r["identity_flips"] for r in rows[1:]] == [0.5, 0.5, 0.5, 0.25]
    assert FOUR.changes_per_input().tolist() == [0, 1, 2, 4]


def test_settled_share_counts_inputs_already_showing_their_final_digit_for_good():
    assert FOUR.settled_from().tolist() == [0, 1, 3, 4]  # epoch indices
    assert [r["settled_share"] for r in FOUR.per_epoch()] == [0.25, 0.5, 0.5, 0.75, 1.0]
    assert FOUR.settle_epoch(0.5) == 2
    assert FOUR.settle_epoch(0.75) == 4
    assert FOUR.settle_epoch(0.9) == 5  # only at the end: input 3 never settles before it


def test_paths_and_the_most_drifting_inputs():
    assert FOUR.path(2) == "0 (1-2) > 8 (3) > 5 (4-5)"
    assert FOUR.path(0) == "3 (1-5)"
    top = FOUR.most_drifting(2, nrow=2)
    assert top == [
        {"input": 3, "row": 1, "column": 1, "changes": 4, "path": "1 (1) > 2 (2) > 1 (3) > 2 (4) > 1 (5)"},
        {"input": 2, "row": 1, "column": 0, "changes": 2, "path": "0 (1-2) > 8 (3) > 5 (4-5)"},
    ]


def test_summary_and_the_digit_asked_for():
    ids = identities([[0, 1], [0, 2], [0, 1]], asked=[0, 1])
    s = ids.summary(settled_share=0.9, most_drifting=1, nrow=2)
    assert (
        s["settle_epoch"] == 3
        and s["settle_epoch_share"] == 0.9
        and s["never_changed_share"] == 0.5
        and s["changes_per_input"] == 1.0
    )
    assert s["identity_flips_last10"] == 0.5 and s["final_asked_share"] == 1.0
    assert [r["asked_share"] for r in ids.per_epoch()] == [1.0, 0.5, 1.0]
    assert "final_asked_share" not in FOUR.summary(settled_share=0.9, most_drifting=1, nrow=2)


class PixelDigit(torch.nn.Module):
    """A stand-in classifier: the digit is the first pixel's grey level (0..9 of 255), with probability ~1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        digit = (x.reshape(x.shape[0], -1)[:, 0] * 255).round().long()
        return torch.nn.functional.one_hot(digit, 10).float() * 20


def test_read_identities_keeps_epochs_and_inputs_apart():
    images = torch.zeros(3, 5, 28, 28, dtype=torch.uint8)
    truth = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [9, 9, 1, 1, 0]])
    images[:, :, 0, 0] = truth.to(torch.uint8)
    ids = read_identities(PixelDigit(), images, [10, 20, 30], batch_size=4)  # batches cross epochs
    assert torch.equal(ids.digits, truth) and ids.epochs == [10, 20, 30]
    assert ids.confidence.min() > 0.99


def reddish(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the CHANGED colour's hue (text is antialiased): grey images and grey digits have R == G."""
    assert CHANGED[0] - CHANGED[1] > 100
    return rgb[..., 0].astype(int) - rgb[..., 1].astype(int) > 60


def test_the_strips_mark_a_changed_digit_in_red():
    images = torch.randint(0, 256, (5, 4, 28, 28), dtype=torch.uint8)
    strips = identity_strips(images, FOUR, [0, 3], title="t")
    assert strips.ndim == 3 and strips.shape[2] == 3
    assert reddish(strips).any()
    calm = identity_strips(images, FOUR, [0], title="t")  # input 0 never changes: no red anywhere
    assert not reddish(calm).any()
    assert strips.shape[1] == calm.shape[1] and strips.shape[0] > calm.shape[0]


def test_the_animation_has_one_frame_per_epoch_and_is_deterministic():
    images = torch.randint(0, 256, (3, 4, 28, 28), dtype=torch.uint8)
    gif = grid_animation(images, [1, 2, 3], nrow=2, scale=1, padding=2, ms_per_epoch=100)
    assert gif == grid_animation(images, [1, 2, 3], nrow=2, scale=1, padding=2, ms_per_epoch=100)
    with Image.open(io.BytesIO(gif)) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.info["duration"] == 100 and im.info["loop"] == 0
        im.seek(2)
        frame = np.asarray(im.convert("L"))
    # The last frame's bottom-right digit, lossless: grey levels survive the GIF's palette.
    assert np.array_equal(frame[-30:-2, -30:-2], images[2, 3].numpy())


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_settle_share_outside_zero_to_one_is_a_config_error(share):
    from pydantic import ValidationError

    from genlab.config import IdentityConfig

    with pytest.raises(ValidationError, match="settled_share"):
        IdentityConfig(settled_share=share)
    assert IdentityConfig(settled_share=1.0).settled_share == 1.0
