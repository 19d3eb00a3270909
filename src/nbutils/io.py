"""Atomic output writing: a temp file in the destination folder, then rename.

An interrupted run never leaves a half-written file under the final name, so
everything a run had finished is intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = ["atomic_path", "save_nifti", "write_bytes", "write_json", "write_table", "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The parent folder is created. On an exception the temporary file is removed
    and ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        Final destination.
    suffix : str, optional
        Suffix of the temporary file (some writers infer the format from it);
        defaults to the suffixes of ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary shared files
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars/arrays allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_table(path: str | os.PathLike, table: pd.DataFrame, index: bool = False) -> Path:
    """Write a DataFrame as TSV (``.tsv``) or CSV (anything else) atomically."""
    sep = "\t" if str(path).endswith(".tsv") else ","
    return write_text(path, table.to_csv(sep=sep, index=index, lineterminator="\n"))


def save_nifti(img: nib.spatialimages.SpatialImage, path: str | os.PathLike) -> Path:
    """Save a NIfTI image atomically (``.nii`` or ``.nii.gz`` from ``path``)."""
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)
