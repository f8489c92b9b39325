"""Reproducibility check: compare a fresh `dvc repro --force` with a recorded one.

A record is a dvc.lock (the hash of every output) plus the metrics files themselves (their values), made on one
machine class (genlab.fingerprint). On the machine class of a record, every hash must match. Where no record
matches, the profile runs twice and the two runs must agree bit for bit (determinism here); their metrics must then
agree with the nearest record's within tolerances measured across machine classes (tolerances.json).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from genlab.fingerprint import CLASS_FIELDS, machine_class


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


def compare_outputs(
    expected_lock: Mapping[str, Any], actual_lock: Mapping[str, Any], *, recorded_only: bool = False
) -> list[Difference]:
    """Outputs whose hash differs or that one side lacks. recorded_only: an output the expected lock never had (a
    stage added after a record was made) is not a difference; unrecorded_outputs() names those."""
    expected, actual = lock_hashes(expected_lock), lock_hashes(actual_lock)
    diffs = [
        Difference(f"output {p}", h, actual.get(p, "(missing)")) for p, h in expected.items() if actual.get(p) != h
    ]
    if not recorded_only:
        diffs += [Difference(f"output {p}", "(not recorded)", h) for p, h in actual.items() if p not in expected]
    return diffs


def unrecorded_outputs(expected_lock: Mapping[str, Any], actual_lock: Mapping[str, Any]) -> list[str]:
    expected = lock_hashes(expected_lock)
    return sorted(p for p in lock_hashes(actual_lock) if p not in expected)


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
    """JSON metrics, or a per-epoch CSV history (keys 'epoch<N>.<column>'; an empty cell is no value: the identity
    flips of a first epoch)."""
    if name.endswith(".json"):
        return flatten_metrics(json.loads(text))
    rows = list(csv.DictReader(io.StringIO(text)))
    return {
        f"epoch{row.get('epoch', i)}.{k}": float(v) for i, row in enumerate(rows) for k, v in row.items() if v != ""
    }


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


def report(diffs: Iterable[Difference]) -> str:
    return "\n".join(f"  {d}" for d in diffs)


# -- records per machine class -----------------------------------------------------------------------------------
# A profile (profiles/<name>/) holds its params overrides, the tolerances measured for it (tolerances.json) and
# one record per machine class: records/<class id>/{fingerprint.json, dvc.lock, metrics/}.


@dataclass(frozen=True)
class Record:
    name: str  # the directory name under records/: the class id of the machine it was made on
    fingerprint: dict[str, Any]
    lock: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # file name -> flattened metrics


def load_records(profile: Path) -> list[Record]:
    records = []
    for d in sorted((profile / "records").glob("*/")):
        if not (d / "fingerprint.json").exists():
            raise SystemExit(f"check_repro: {d} has no fingerprint.json; remove the directory or re-record it")
        records.append(
            Record(
                name=d.name,
                fingerprint=json.loads((d / "fingerprint.json").read_text()),
                lock=yaml.safe_load((d / "dvc.lock").read_text()),
                metrics={p.name: parse_metrics_file(p.name, p.read_text()) for p in sorted((d / "metrics").iterdir())},
            )
        )
    return records


def matching_record(records: Iterable[Record], fp: Mapping[str, Any]) -> Record | None:
    """The record made on this machine class (every CLASS_FIELDS value equal), if any."""
    here = machine_class(fp)
    return next((r for r in records if machine_class(r.fingerprint) == here), None)


def nearest_record(records: Iterable[Record], fp: Mapping[str, Any]) -> Record | None:
    """The record of the same device whose machine class agrees with this one in the most fields, the earlier
    CLASS_FIELDS (vendor, ISA) weighing more than the later ones (threads, versions). None when no record was made
    on this device: a GPU's metrics are not held to tolerances measured between CPU kernels, nor the reverse."""
    weight = {k: 2 ** (len(CLASS_FIELDS) - i) for i, k in enumerate(CLASS_FIELDS)}
    records = [r for r in records if r.fingerprint.get("device") == fp.get("device")]

    def score(r: Record) -> int:
        return sum(w for k, w in weight.items() if r.fingerprint.get(k) == fp.get(k))

    return max(records, key=score, default=None)


def measure_tolerances(
    reference: Mapping[str, Mapping[str, float]], samples: Iterable[Mapping[str, Mapping[str, float]]], factor: float
) -> dict[str, float]:
    """Per metric ('file:key'): `factor` times the largest absolute difference from the reference seen in the
    samples (runs on other machine classes), shared by its family (metric_family): that one class's share or one
    epoch's loss moved by x is evidence that another can. A metric whose family never moved gets 0: exact."""
    spread: dict[str, float] = {f"{f}:{k}": 0.0 for f, values in reference.items() for k in values}
    for sample in samples:
        for f, values in reference.items():
            for k, want in values.items():
                have = sample.get(f, {}).get(k)
                if have is None:
                    raise ValueError(f"a tolerance run has no metric {f}:{k}")
                if math.isnan(have) != math.isnan(want):
                    raise ValueError(f"{f}:{k} is NaN in one run and not in the other: no tolerance can cover that")
                if not math.isnan(have):
                    spread[f"{f}:{k}"] = max(spread[f"{f}:{k}"], abs(have - want))
    family: dict[str, float] = {}
    for key, s in spread.items():
        family[metric_family(key)] = max(family.get(metric_family(key), 0.0), s)
    return {key: factor * family[metric_family(key)] for key in spread}


def metric_family(key: str) -> str:
    """evaluate.json:gan.class_share.3 -> evaluate.json:gan.class_share.*; h.csv:epoch2.loss -> h.csv:epoch*.loss"""
    key = re.sub(r"max_class_share$", "class_share.0", key)  # the largest share is one of the shares
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", re.sub(r"(?<=:)epoch\d+(?=\.)", "epoch*", key))


def compare_within(
    expected: Mapping[str, Mapping[str, float]],
    actual: Mapping[str, Mapping[str, float]],
    tolerances: Mapping[str, float],
) -> list[Difference]:
    """Every expected metric within its measured absolute tolerance; a metric with none measured is a difference."""
    diffs = []
    for name, values in expected.items():
        got = actual.get(name, {})
        for key, want in values.items():
            have, tol = got.get(key), tolerances.get(f"{name}:{key}")
            what = f"metric {name}:{key}"
            if have is None:
                diffs.append(Difference(what, want, "(missing)"))
            elif tol is None:
                diffs.append(Difference(what, want, f"{have} (no measured tolerance: re-measure the tolerances)"))
            elif abs(have - want) > tol or math.isnan(have) != math.isnan(want):
                diffs.append(
                    Difference(what, want, f"{have} (|difference| {abs(have - want):.3g} > tolerance {tol:.3g})")
                )
    return diffs
