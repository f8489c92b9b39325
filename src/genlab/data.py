"""Datasets: the registry of files and checksums, fetching with verification, IDX parsing.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): big-endian header
  bytes 0-1 zero, byte 2 dtype code (0x08 = uint8), byte 3 number of dims, then one uint32 per dim,
  then the data in C order.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.errors import GenlabError
from genlab.io import atomic_write_bytes

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mirrors: tuple[str, ...]  # base URLs serving <file>.gz
    sha256: dict[str, str]  # SHA-256 of the *decompressed* IDX content


REGISTRY: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # Computed from Debian's dataset-fashion-mnist (the upstream release, /usr/share/datasets/fashion-mnist).
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
}


class DataError(GenlabError):
    """A dataset file that is missing, unreadable, corrupt or not what its checksum says."""


def dataset_spec(name: str, custom_sha256: dict[str, str] | None = None) -> DatasetSpec:
    if name == "custom":
        if not custom_sha256:
            raise DataError("dataset 'custom' needs data.custom_sha256 in params.yaml")
        return DatasetSpec(name="custom", mirrors=(), sha256=dict(custom_sha256))
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)} or 'custom'") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The largest IDX file read (1 GiB; MNIST's largest is 47 MB): a bound on downloads, files and decompression, so a
# gzip bomb or a runaway file is refused before it fills memory.
MAX_IDX_BYTES = 1 << 30


def _idx_size(header: bytes, origin: str) -> int | None:
    """The total size an IDX file's header declares (header + data), or None while `header` is too short to say."""
    if len(header) < 4:
        return None
    ndim = header[3]
    if len(header) < 4 + 4 * ndim:
        return None
    dims = np.frombuffer(header, dtype=">u4", count=ndim, offset=4)
    size = 4 + 4 * ndim + int(np.prod(dims.astype(np.int64)))
    if size > MAX_IDX_BYTES:
        raise DataError(f"{origin}: its IDX header declares {size} bytes, over genlab's limit of {MAX_IDX_BYTES}")
    return size


def _maybe_gunzip(blob: bytes, origin: str) -> bytes:
    """blob, decompressed if it is gzip. Decompression stops at the size the IDX header inside declares (plus one
    byte, to notice more), so a small file that inflates to gigabytes costs at most that much memory."""
    if blob[:2] != b"\x1f\x8b":
        return blob
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        out = inflate.decompress(blob, 4 + 4 * 255)  # the longest IDX header
        limit = _idx_size(out, origin)
        if limit is None:  # not an IDX header: parse_idx says so; bound it all the same
            limit = MAX_IDX_BYTES
        out += inflate.decompress(inflate.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as e:
        raise DataError(f"{origin}: corrupt gzip ({e})") from e
    if len(out) > limit:
        raise DataError(f"{origin}: decompresses to more than the {limit} bytes its IDX header declares")
    if not inflate.eof:
        raise DataError(f"{origin}: truncated gzip (the stream ends early)")
    return out


def _verify(content: bytes, expected: str, origin: str) -> None:
    actual = sha256_hex(content)
    if actual != expected:
        raise DataError(
            f"{origin}: SHA-256 of the decompressed file is {actual}, expected {expected}."
            " The file is corrupt, truncated or a different dataset; delete it or fix the mirror."
        )


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https/http mirrors only)
        blob = response.read(MAX_IDX_BYTES + 1)
    if len(blob) > MAX_IDX_BYTES:
        raise DataError(f"{url}: larger than genlab's limit of {MAX_IDX_BYTES} bytes")
    return blob


def _read_regular(path: Path) -> bytes:
    """A file's bytes, if it is a regular file of at most MAX_IDX_BYTES: a FIFO or a device would block or never
    end. Opened without blocking and checked on the open descriptor, so nothing can swap the file in between."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{path}: not a regular file (a FIFO, device or directory); genlab reads only files")
        if st.st_size > MAX_IDX_BYTES:
            raise DataError(f"{path}: {st.st_size} bytes, over genlab's limit of {MAX_IDX_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _local_candidates(mirror: Path, filename: str) -> list[Path]:
    """The mirror's copies of `filename` (compressed, then raw) that exist; DataError when the mirror is not a
    directory or holds neither."""
    if not mirror.is_dir():
        problem = "does not exist" if not mirror.exists() else "is not a directory"
        raise DataError(f"GENLAB_DATA_MIRROR={mirror} {problem}; point it at a directory holding the IDX files")
    found = [p for p in (mirror / f"{filename}.gz", mirror / filename) if os.path.lexists(p)]
    if not found:
        raise DataError(f"GENLAB_DATA_MIRROR={mirror} has neither {filename}.gz nor {filename}")
    return found


Fetcher = Callable[[str, float], bytes]


def fetch_file(
    spec: DatasetSpec,
    filename: str,
    *,
    local_mirror: Path | None,
    offline: bool,
    fetcher: Fetcher = _download,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
    unreachable: set[str] | None = None,
) -> bytes:
    """Return the verified, decompressed content of one IDX file.

    Tries each official mirror in turn (unless offline), then the local mirror directory. Every candidate is
    checked by the SHA-256 of its decompressed content; a bad candidate is reported and the next one tried.
    unreachable: mirrors that could not be reached for an earlier file, skipped here; one that cannot be reached
    now is added (so an offline machine reports each mirror once, not once per file).
    """
    unreachable = set() if unreachable is None else unreachable
    expected = spec.sha256[filename]
    problems: list[str] = []
    sources: list[tuple[str, Callable[[], bytes]]] = []
    if not offline:
        for base in spec.mirrors:
            if base not in unreachable:
                url = f"{base}{filename}.gz"
                sources.append((url, functools.partial(fetcher, url, timeout)))
    if local_mirror is not None:
        try:
            copies = _local_candidates(local_mirror, filename)
            sources += [(str(p), functools.partial(_read_regular, p)) for p in copies]
        except DataError as e:
            problems.append(str(e))
    for origin, read in sources:
        try:
            blob = read()
            content = _maybe_gunzip(blob, origin)
            _verify(content, expected, origin)
        except (urllib.error.URLError, OSError, TimeoutError, DataError) as e:
            problems.append(str(e) if str(e).startswith(origin) else f"{origin}: {e}")
            mirror = next((b for b in spec.mirrors if origin.startswith(b)), None)
            # Not reachable, rather than a bad copy or an HTTP error for this one file (a server that answered).
            if mirror is not None and not isinstance(e, DataError | urllib.error.HTTPError):
                unreachable.add(mirror)
                log(f"download: {mirror} unreachable ({e}); not asking it for the other files")
            else:
                log(f"download: {origin} failed, trying the next source ({e})")
            continue
        log(f"download: {filename} from {origin} (sha256 ok)")
        return content
    if not problems:
        why = "GENLAB_OFFLINE is set" if offline else f"dataset {spec.name!r} has no download mirror"
        problems.append(f"{why} and GENLAB_DATA_MIRROR is not set")
    # One problem (the usual case: one local mirror) on the first line; several listed below it.
    tried = problems[0] if len(problems) == 1 else "tried:\n" + "\n".join(f"  - {p}" for p in problems)
    raise DataError(
        f"could not get a verified copy of {filename} for dataset {spec.name!r}: {tried}\n"
        "Set GENLAB_DATA_MIRROR to a directory holding the IDX files (.gz or raw), e.g. ../shared/datasets/mnist."
    )


def prepare(
    spec: DatasetSpec,
    out_dir: Path,
    *,
    local_mirror: Path | None,
    offline: bool,
    fetcher: Fetcher = _download,
    log: Callable[[str], None] = print,
) -> dict:
    """Fetch and verify all four files, then write them (decompressed IDX) and a manifest into out_dir.

    Nothing is written until all four files verified. The directory is filled under a temporary name beside
    out_dir and renamed into place, so an interrupted or failed run leaves no partial dataset behind.
    """
    unreachable: set[str] = set()
    contents = {
        f: fetch_file(spec, f, local_mirror=local_mirror, offline=offline, fetcher=fetcher, log=log,
                      unreachable=unreachable)
        for f in IDX_FILES
    }  # fmt: skip
    # Parse before writing: a file with a valid checksum but a bad header is still rejected early.
    shapes = {f: list(parse_idx(c, f).shape) for f, c in contents.items()}
    manifest = {"dataset": spec.name, "files": {f: {"sha256": spec.sha256[f], "shape": shapes[f]} for f in IDX_FILES}}
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for f, c in contents.items():
            atomic_write_bytes(staging / f, c)
        atomic_write_bytes(staging / "manifest.json", manifest_bytes)
        staging.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def parse_idx(content: bytes, origin: str = "IDX data") -> np.ndarray:
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{origin}: not an IDX file (bad magic number)")
    if content[2] != 0x08:
        raise DataError(f"{origin}: unsupported IDX dtype 0x{content[2]:02x}; only unsigned bytes (0x08)")
    ndim = content[3]
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{origin}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    n = int(np.prod(shape)) if shape else 0
    if len(content) != header + n:
        raise DataError(f"{origin}: IDX header says {shape} ({n} bytes) but the file holds {len(content) - header}")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX (used by tests and tools that build small datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    buf = io.BytesIO()
    buf.write(bytes([0, 0, 0x08, array.ndim]))
    buf.write(np.asarray(array.shape, dtype=">u4").tobytes())
    buf.write(array.tobytes())
    return buf.getvalue()


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # [N, 28, 28] uint8
    labels: torch.Tensor  # [N] uint8 (int64 on use)


def load_split(data_dir: str | os.PathLike[str], split: str) -> Split:
    """Load the prepared 'train' or 't10k' split. Reads ~47 MB of raw bytes: tens of milliseconds."""
    data_dir = Path(data_dir)
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', got {split!r}")
    paths = [data_dir / f"{split}-images-idx3-ubyte", data_dir / f"{split}-labels-idx1-ubyte"]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p} is missing: run the download stage first (dvc repro download)")
    images = parse_idx(paths[0].read_bytes(), str(paths[0]))
    labels = parse_idx(paths[1].read_bytes(), str(paths[1]))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{data_dir}: images {images.shape} and labels {labels.shape} do not match")
    return Split(images=torch.from_numpy(images.copy()), labels=torch.from_numpy(labels.copy()))


def dataset_origin(name: str, data_dir: str | os.PathLike[str]) -> str:
    """Where a dataset comes from, for the run's input record: its first official mirror, or the prepared
    directory of a custom dataset."""
    spec = REGISTRY.get(name)
    return spec.mirrors[0] if spec is not None and spec.mirrors else str(data_dir)


def dataset_checksum(data_dir: str | os.PathLike[str]) -> str:
    """One SHA-256 over the manifest: identifies the exact data a model was trained on."""
    return sha256_hex((Path(data_dir) / "manifest.json").read_bytes())


def to_flat_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 784] in [0, 1] on device."""
    return images.to(device=device).reshape(images.shape[0], -1).float().div_(255.0)


@dataclass(frozen=True)
class TrainingData:
    """The dataset on the training device: images float [N, 784] in [0, 1], labels long [N]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str) -> TrainingData:
        train, test = load_split(path, "train"), load_split(path, "t10k")
        return cls(
            train_images=to_flat_float(train.images, device),
            train_labels=train.labels.long().to(device),
            test_images=to_flat_float(test.images, device),
            test_labels=test.labels.long().to(device),
        )
