"""Quiet Lightning: no per-run banner in notebooks and logs, warnings that matter kept."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet_lightning"]

_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's per-run banner (GPU/TPU lines, tips, "fit stopped") and its deprecation chatter.

    Lightning's warnings and errors still show, and so do the caller's own warnings.
    """
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
