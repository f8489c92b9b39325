"""Atomic file writes: write beside the target, fsync, then rename over it.

A reader (or DVC) sees either the old file or the complete new one, never a partial file, even when the
process is killed mid-write.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def rows_csv(rows: list[dict[str, float]]) -> str:
    """A CSV of per-epoch rows, the columns in order of first appearance; a value a row lacks is left empty (the
    identity flips of a first epoch). Floats in full (repr): the file's bytes are the values' bits."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def canonical(obj: Any) -> Any:
    """A copy of obj whose pickle depends only on its content.

    Pickle memoises objects by identity, so the same content reached by different code paths (a fresh run vs.
    one resumed from a checkpoint, where strings come from the loaded file) pickles to different bytes. Here
    every container and tensor is rebuilt and every string interned, so equal content gives equal bytes.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone(memory_format=torch.contiguous_format)
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(str(obj))
    return obj


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """torch.save, byte-for-byte reproducible (see canonical) and atomic."""
    buf = io.BytesIO()
    torch.save(canonical(obj), buf)
    atomic_write_bytes(path, buf.getvalue())


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes, bytes), independent of file format."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()
