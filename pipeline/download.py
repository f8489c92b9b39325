"""Stage download: fetch the dataset's four IDX files, verify their SHA-256, write them to paths.data."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import sys
from pathlib import Path

from genlab.config import Runtime, load_params
from genlab.data import DataError, dataset_spec, prepare


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = Runtime()
    spec = dataset_spec(params.data.dataset, params.data.custom_sha256)
    try:
        prepare(spec, Path(params.paths.data), local_mirror=runtime.data_mirror, offline=runtime.offline)
    except DataError as e:
        sys.exit(f"genlab download: {e}")


if __name__ == "__main__":
    main()
