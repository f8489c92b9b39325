"""Identity over training: which digit the classifier sees in each fixed input's image at every epoch.

A GAN's fixed noise is drawn once, so its grid shows the same inputs every epoch; the original write-up saw one of
them "shifting from a 0 to an 8 and then to a 5". The per-epoch snapshots (genlab.trainer) hold those images; this
module reads them with the train_classifier stage's CNN and summarises how identities move:

- identity_flips (per epoch from the second): the share of inputs whose digit differs from the previous epoch's;
- settled_share (per epoch): the share of inputs that already show their final digit and keep it to the end;
- settle_epoch: the first epoch at which settled_share reaches a chosen share (identity.settled_share in params);
- the inputs that changed digit most often, with the path of digits they took.

It draws one strip per input across all epochs (each image with its digit, a change marked) and an animated GIF of
the grid. For a VAE's snapshots (reconstructions of fixed test images) the same figures show how its
reconstructions' identities move. A conditional model's inputs also carry the digit asked for (asked_share).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from genlab.feature_extractor import predict_logits
from genlab.render import BACKGROUND, grid_image, label_font

CHANGED = (200, 30, 30)  # the digit under an image whose digit changed since the previous epoch
KEPT = (90, 90, 90)


@dataclass(frozen=True)
class Identities:
    epochs: list[int]  # [E], the snapshots' epochs in order
    digits: torch.Tensor  # long [E, N]: the classifier's digit for input n at epoch e
    confidence: torch.Tensor  # float [E, N]: its softmax probability
    asked: torch.Tensor | None = None  # long [N]: the digit a conditional model was asked for

    @property
    def num_inputs(self) -> int:
        return self.digits.shape[1]

    def changed(self) -> torch.Tensor:
        """bool [E-1, N]: input n's digit at epoch e+1 differs from epoch e's."""
        return self.digits[1:] != self.digits[:-1]

    def changes_per_input(self) -> torch.Tensor:
        return self.changed().sum(dim=0)  # long [N]

    def settled_from(self) -> torch.Tensor:
        """long [N]: the index of the epoch from which each input keeps its final digit (0 when it never changed)."""
        changed = self.changed()  # [E-1, N]
        epochs_after = torch.arange(1, changed.shape[0] + 1).unsqueeze(1)  # row i: the change into epoch i+1
        return (changed.long() * epochs_after).amax(dim=0) if changed.numel() else torch.zeros(self.num_inputs).long()

    def settled_shares(self) -> torch.Tensor:
        """float64 [E]: at each epoch, the share of inputs already showing the digit they keep to the end."""
        epoch_index = torch.arange(len(self.epochs)).unsqueeze(1)  # [E, 1]
        return (self.settled_from().unsqueeze(0) <= epoch_index).double().mean(dim=1)

    def per_epoch(self) -> list[dict[str, float]]:
        """One row per epoch: epoch, identity_flips (absent at the first epoch: nothing to compare with),
        settled_share, mean_confidence and, for a conditional model, asked_share."""
        flips = self.changed().double().mean(dim=1).tolist()  # [E-1]
        settled = self.settled_shares().tolist()
        confidence = self.confidence.double().mean(dim=1).tolist()
        asked = None if self.asked is None else (self.digits == self.asked).double().mean(dim=1).tolist()
        rows = []
        for i, epoch in enumerate(self.epochs):
            row: dict[str, float] = {"epoch": epoch}
            if i > 0:
                row["identity_flips"] = flips[i - 1]
            row["settled_share"] = settled[i]
            row["mean_confidence"] = confidence[i]
            if asked is not None:
                row["asked_share"] = asked[i]
            rows.append(row)
        return rows

    def settle_epoch(self, share: float) -> int:
        """The first epoch from which at least `share` of the inputs keep their final digit to the end (the last
        epoch at the latest: every input is settled there)."""
        reached = (self.settled_shares() >= share).nonzero()
        return self.epochs[int(reached[0])] if reached.numel() else self.epochs[-1]

    def path(self, n: int) -> str:
        """Input n's digits over training as runs, e.g. '0 (1-12) > 8 (13-40) > 5 (41-100)'."""
        digits, runs, start = self.digits[:, n].tolist(), [], 0
        for i in range(1, len(digits) + 1):
            if i == len(digits) or digits[i] != digits[start]:
                first, last = self.epochs[start], self.epochs[i - 1]
                runs.append(f"{digits[start]} ({first}-{last})" if last > first else f"{digits[start]} ({first})")
                start = i
        return " > ".join(runs)

    def most_drifting(self, k: int, nrow: int) -> list[dict[str, Any]]:
        """The k inputs that changed digit most often (ties: the lower index first), each with its place in the
        grid (row and column of `nrow` images per row, from 0), its number of changes and its path."""
        changes = self.changes_per_input()
        order = sorted(range(self.num_inputs), key=lambda n: (-int(changes[n]), n))[:k]
        return [
            {"input": n, "row": n // nrow, "column": n % nrow, "changes": int(changes[n]), "path": self.path(n)}
            for n in order
        ]

    def summary(self, *, settled_share: float, most_drifting: int, nrow: int) -> dict[str, Any]:
        changes = self.changes_per_input().double()
        flips = self.changed().double().mean(dim=1)  # [E-1]
        last = min(10, flips.shape[0])
        out: dict[str, Any] = {
            "num_inputs": self.num_inputs,
            "settle_epoch": self.settle_epoch(settled_share),
            "settle_epoch_share": settled_share,  # the share settle_epoch is for (a param, not logged as a metric)
            "changes_per_input": float(changes.mean()) if changes.numel() else 0.0,
            "never_changed_share": float((changes == 0).double().mean()),
            # The last ten epochs' mean flips: whether identities still move at the end.
            "identity_flips_last10": float(flips[-last:].mean()) if last else 0.0,
            "final_mean_confidence": float(self.confidence[-1].double().mean()),
        }
        if self.asked is not None:
            out["final_asked_share"] = float((self.digits[-1] == self.asked).double().mean())
        out["most_drifting"] = self.most_drifting(most_drifting, nrow)
        return out


def read_identities(
    classifier: torch.nn.Module,
    images: torch.Tensor,
    epochs: Sequence[int],
    asked: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> Identities:
    """images: uint8 [E, N, 28, 28], the snapshots of E epochs."""
    e, n = images.shape[:2]
    x = images.reshape(e * n, -1).float().div(255)  # [E*N, 784] in [0, 1], as the classifier was trained
    probs = predict_logits(classifier, x, batch_size).softmax(dim=1)
    confidence, digits = probs.max(dim=1)
    return Identities(list(epochs), digits.reshape(e, n), confidence.reshape(e, n), asked)


def identity_strips(
    images: torch.Tensor, ids: Identities, inputs: Sequence[int], *, scale: int = 1, title: str = ""
) -> np.ndarray:
    """RGB [H, W, 3]: one row per input of `inputs`, its image at every epoch with the digit the classifier sees
    under it (red where it changed since the previous epoch); the row starts with the input's index and number of
    changes. images: uint8 [E, N, 28, 28]."""
    side, pad = images.shape[-1] * scale, 2
    font_size = max(9, 3 * scale + 6)
    font = label_font(font_size)
    label_h, head_w, title_h = font_size + 4, 10 * font_size, 2 * font_size if title else pad
    num_epochs = images.shape[0]
    step = max(1, num_epochs // 10)  # epoch numbers along the top every `step` epochs
    width = head_w + num_epochs * (side + pad) + pad
    height = title_h + label_h + len(inputs) * (side + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill=(0, 0, 0), font=font)
    for e in range(0, num_epochs, step):
        draw.text((head_w + e * (side + pad), title_h), f"{ids.epochs[e]}", fill=(0, 0, 0), font=font)
    changes = ids.changes_per_input()
    for r, n in enumerate(inputs):
        y = title_h + label_h + r * (side + label_h + pad)
        draw.text((pad, y + side // 3), f"#{n}: {int(changes[n])} changes", fill=(0, 0, 0), font=font)
        strip = images[:, n].repeat_interleave(scale, 1).repeat_interleave(scale, 2).numpy()  # [E, side, side]
        for e in range(num_epochs):
            x = head_w + e * (side + pad)
            canvas.paste(Image.fromarray(strip[e]).convert("RGB"), (x, y))
            changed = e > 0 and bool(ids.digits[e, n] != ids.digits[e - 1, n])
            digit = str(int(ids.digits[e, n]))
            text_w = draw.textlength(digit, font=font)
            draw.text((x + (side - text_w) / 2, y + side), digit, fill=CHANGED if changed else KEPT, font=font)
    return np.asarray(canvas)


def grid_animation(
    images: torch.Tensor, epochs: Sequence[int], *, nrow: int, scale: int, padding: int, ms_per_epoch: int
) -> bytes:
    """An animated GIF (looping) of the fixed inputs' grid, one frame per epoch with its number on top. Frames are
    greyscale, so the GIF's 256-colour palette loses nothing."""
    font = label_font(6 * scale)
    frames = []
    for epoch, grid in zip(epochs, images, strict=True):
        panel = grid_image(grid, nrow=nrow, scale=scale, padding=padding)
        label_h = 8 * scale
        frame = Image.new("L", (panel.shape[1], panel.shape[0] + label_h), BACKGROUND)
        ImageDraw.Draw(frame).text((padding * scale, scale), f"epoch {epoch}", fill=0, font=font)
        frame.paste(Image.fromarray(panel), (0, label_h))
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms_per_epoch, loop=0)
    return buf.getvalue()
