"""Stage download: fetch the dataset's four IDX files, verify their SHA-256, write them to paths.data."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from pathlib import Path

from genlab.config import load_params, load_runtime
from genlab.data import dataset_spec, prepare
from genlab.entry import run_stage


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = load_runtime()
    spec = dataset_spec(params.data.dataset, params.data.custom_sha256)
    prepare(spec, Path(params.paths.data), local_mirror=runtime.data_mirror, offline=runtime.offline)


if __name__ == "__main__":
    run_stage("download", main)
