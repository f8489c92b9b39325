"""Reproducibility check: compare a fresh `dvc repro --force` with a recorded one.

The record is a dvc.lock (the hash of every output) plus the metrics files themselves (their values). On CPU,
and on the same GPU model in deterministic mode, every hash must match. Across different GPUs, bitwise equality
is not expected; metrics must then agree within a relative tolerance.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Difference:
    what: str  # "output models/gan.pt" or "metric metrics/evaluate.json:gan.d_real"
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, got {self.actual}"


def lock_hashes(lock: Mapping[str, Any], section: str = "outs") -> dict[str, str]:
    """{path: md5} of every stage's outs (or deps) in a parsed dvc.lock."""
    hashes: dict[str, str] = {}
    for stage in lock.get("stages", {}).values():
        for entry in stage.get(section, []):
            hashes[entry["path"]] = entry.get("md5", "")
    return hashes


def compare_outputs(expected_lock: Mapping[str, Any], actual_lock: Mapping[str, Any]) -> list[Difference]:
    expected, actual = lock_hashes(expected_lock), lock_hashes(actual_lock)
    diffs = [
        Difference(f"output {p}", h, actual.get(p, "(missing)")) for p, h in expected.items() if actual.get(p) != h
    ]
    diffs += [Difference(f"output {p}", "(not recorded)", h) for p, h in actual.items() if p not in expected]
    return diffs


def changed_deps(expected_lock: Mapping[str, Any], actual_lock: Mapping[str, Any]) -> list[str]:
    """Inputs whose hash differs: code or data changed since the record was made (a likely cause)."""
    expected, actual = lock_hashes(expected_lock, "deps"), lock_hashes(actual_lock, "deps")
    outs = set(lock_hashes(actual_lock))
    return sorted(p for p, h in expected.items() if p not in outs and actual.get(p) != h)


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_metrics(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def parse_metrics_file(name: str, text: str) -> dict[str, float]:
    """JSON metrics, or a per-epoch CSV history (keys 'epoch<N>.<column>')."""
    if name.endswith(".json"):
        return flatten_metrics(json.loads(text))
    rows = list(csv.DictReader(io.StringIO(text)))
    return {f"epoch{row.get('epoch', i)}.{k}": float(v) for i, row in enumerate(rows) for k, v in row.items()}


def compare_metrics(
    expected: Mapping[str, Mapping[str, float]], actual: Mapping[str, Mapping[str, float]], rel_tolerance: float
) -> list[Difference]:
    """Per file and key; exact when rel_tolerance is 0."""
    diffs = []
    for name, values in expected.items():
        got = actual.get(name, {})
        for key, want in values.items():
            have = got.get(key)
            if have is None:
                diffs.append(Difference(f"metric {name}:{key}", want, "(missing)"))
            elif not math.isclose(have, want, rel_tol=rel_tolerance, abs_tol=0.0) and not (
                math.isnan(have) and math.isnan(want)
            ):
                diffs.append(Difference(f"metric {name}:{key}", want, have))
    return diffs


def report(diffs: Iterable[Difference], deps: Iterable[str] = ()) -> str:
    lines = [f"  {d}" for d in diffs]
    deps = list(deps)
    if deps:
        lines.append("  inputs that changed since the record was made (a likely cause): " + ", ".join(deps))
    return "\n".join(lines)
