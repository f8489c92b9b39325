"""What training and evaluation print: compact lines, bars only on a terminal."""

from __future__ import annotations

import io
import sys

from genlab.progress import LINE_WIDTH, epoch_line, progress, summary_line


def test_an_epoch_line_fits_in_120_characters_and_keeps_the_losses_first():
    metrics = {"epoch": 12, "loss_d": 1.23456, "loss_g": 0.98765, **{f"diagnostic_{i}": 0.5 for i in range(30)}}
    line = epoch_line("cgan", 12, 100, metrics, seconds=17.25, eta=1513)
    assert len(line) <= LINE_WIDTH
    assert line.startswith("[cgan] 12/100  loss_d 1.235  loss_g 0.9877") and line.endswith("| 17.2s eta 25m13s")
    assert "diagnostic_29" not in line  # what does not fit is in MLflow and the history CSV


def test_a_summary_line_skips_what_is_not_a_number():
    line = summary_line("[evaluate gan]", {"feature_extractor": {"a": 1}, "fid": 55.8, "knn_recall": 0.5}, "| x")
    assert line == "[evaluate gan]  fid 55.8  knn_recall 0.5  | x"


def test_no_bar_is_drawn_when_stderr_is_not_a_terminal(monkeypatch):
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    assert list(progress(range(5), total=5, desc="gan epoch 1")) == [0, 1, 2, 3, 4]
    assert captured.getvalue() == ""


def test_a_terminal_gets_a_bar_that_erases_itself(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    captured = Terminal()
    monkeypatch.setattr(sys, "stderr", captured)
    assert list(progress(range(3), total=3, desc="gan epoch 1")) == [0, 1, 2]
    drawn = captured.getvalue()
    assert "gan epoch 1:" in drawn and "/3 " in drawn  # the bar, with its total
    assert drawn.rstrip("\r").rsplit("\r", 1)[-1].strip() == ""  # erased at the end (leave=False)
