from __future__ import annotations

import gzip
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from genlab.data import (
    IDX_FILES,
    REGISTRY,
    DataError,
    DatasetSpec,
    _download,
    dataset_spec,
    load_split,
    parse_idx,
    prepare,
    write_idx,
)

from .conftest import MNIST_MIRROR


def quiet(_: str) -> None:
    pass


def test_idx_round_trip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(write_idx(a)), a)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x01\x00\x08\x01", "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01x", "dtype"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (write_idx(np.zeros((4, 2), np.uint8))[:-1], "holds 7"),
    ],
)
def test_bad_idx_is_rejected(blob, message):
    with pytest.raises(DataError, match=message):
        parse_idx(blob)


def test_prepare_from_local_mirror(tiny_mirror, tmp_path):
    mirror, sha = tiny_mirror
    out = tmp_path / "prepared"
    manifest = prepare(dataset_spec("custom", sha), out, local_mirror=mirror, offline=True, log=quiet)
    assert manifest["files"]["train-images-idx3-ubyte"]["shape"] == [300, 28, 28]
    train = load_split(out, "train")
    assert train.images.shape == (300, 28, 28) and train.labels.shape == (300,)
    assert int(train.labels.max()) <= 9


def test_raw_idx_files_are_accepted(tmp_path):
    from .conftest import make_idx_files

    sha = make_idx_files(tmp_path / "raw", gz=False)
    prepare(dataset_spec("custom", sha), tmp_path / "out", local_mirror=tmp_path / "raw", offline=True, log=quiet)
    assert (tmp_path / "out" / "t10k-labels-idx1-ubyte").exists()


def test_checksum_mismatch_is_rejected_and_nothing_is_written(tiny_mirror, tmp_path):
    mirror, sha = tiny_mirror
    bad = dict(sha, **{"t10k-labels-idx1-ubyte": "0" * 64})
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        prepare(dataset_spec("custom", bad), out, local_mirror=mirror, offline=True, log=quiet)
    assert "SHA-256 of the decompressed file" in str(err.value)
    assert not out.exists()


def test_truncated_gzip_is_rejected(tiny_mirror, tmp_path):
    mirror, sha = tiny_mirror
    gz = mirror / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        prepare(dataset_spec("custom", sha), tmp_path / "o", local_mirror=mirror, offline=True, log=quiet)


def test_mirrors_are_tried_in_order_then_the_local_mirror(tiny_mirror, tmp_path):
    mirror, sha = tiny_mirror
    wrong = gzip.compress(write_idx(np.ones((3, 28, 28), np.uint8)))
    calls: list[str] = []

    def fetcher(url: str, timeout: float) -> bytes:
        calls.append(url)
        if url.startswith("http://first"):
            raise OSError("connection refused")
        return wrong  # second mirror serves the wrong content

    spec = DatasetSpec("custom", ("http://first/", "http://second/"), sha)
    said: list[str] = []
    prepare(spec, tmp_path / "out", local_mirror=mirror, offline=False, fetcher=fetcher, log=said.append)
    assert calls[:2] == ["http://first/train-images-idx3-ubyte.gz", "http://second/train-images-idx3-ubyte.gz"]
    # The unreachable mirror is asked once; the one serving a bad copy is asked for every file (its next copy may
    # be good); the local mirror serves each file.
    assert len(calls) == 5 and sum(c.startswith("http://first") for c in calls) == 1
    assert sum("unreachable" in line for line in said) == 1


def test_a_mirror_that_answers_with_an_http_error_is_asked_again_for_the_next_file(tiny_mirror, tmp_path):
    import urllib.error

    mirror, sha = tiny_mirror
    calls: list[str] = []

    def fetcher(url: str, timeout: float) -> bytes:
        calls.append(url)
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)  # type: ignore[arg-type]

    spec = DatasetSpec("custom", ("http://only/",), sha)
    prepare(spec, tmp_path / "out", local_mirror=mirror, offline=False, fetcher=fetcher, log=quiet)
    assert len(calls) == 4  # one 404 says nothing about the other files


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_real_http_download_from_a_loopback_mirror(tiny_mirror, tmp_path):
    """The production downloader (urllib) against an HTTP server on 127.0.0.1 serving .gz files."""
    mirror, sha = tiny_mirror
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        spec = DatasetSpec("custom", ("http://127.0.0.1:9/unreachable/", base), sha)
        prepare(spec, tmp_path / "out", local_mirror=None, offline=False, fetcher=_download, log=quiet)
    finally:
        server.shutdown()
    assert load_split(tmp_path / "out", "t10k").images.shape == (100, 28, 28)


def test_no_source_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="GENLAB_DATA_MIRROR"):
        prepare(REGISTRY["mnist"], tmp_path / "out", local_mirror=None, offline=True, log=quiet)


def test_registry_has_four_checksums_per_dataset():
    for spec in REGISTRY.values():
        assert set(spec.sha256) == set(IDX_FILES)
        assert all(len(v) == 64 for v in spec.sha256.values())


@pytest.mark.skipif(not MNIST_MIRROR.exists(), reason="local MNIST mirror not present")
def test_real_mnist_verifies(tmp_path: Path):
    prepare(REGISTRY["mnist"], tmp_path / "mnist", local_mirror=MNIST_MIRROR, offline=True, log=quiet)
    test = load_split(tmp_path / "mnist", "t10k")
    assert test.images.shape == (10000, 28, 28)
    assert sorted(test.labels.unique().tolist()) == list(range(10))


def test_prepare_replaces_an_existing_dataset_and_leaves_no_staging_behind(tiny_mirror, tmp_path):
    mirror, sha = tiny_mirror
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "stale-file").write_text("from an older run")
    prepare(dataset_spec("custom", sha), out, local_mirror=mirror, offline=True, log=quiet)
    assert sorted(p.name for p in out.iterdir()) == sorted([*IDX_FILES, "manifest.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "prepared"]
