"""Synthetic T1 cohort with ground truth (the suite's embedded default data).

Subjects are warped from the real MNI152 2009 template, its tissue maps and
the Neuromorphometrics atlas, with healthy ageing, AD-like atrophy, tumours
(glioma, meningioma, pituitary adenoma) and scanner effects, and every
ground truth is written beside the images. See ``data/README.md``.

Heavy modules are imported on first use so ``nbutils --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "DIAGNOSES",
    "SITES",
    "disease_effects",
    "draw_subject",
    "ensure_cohort",
    "generate_cohort",
    "native_to_mni",
    "register",
    "render_subject",
    "subject_paths",
]

_WHERE = {
    "DIAGNOSES": "subject",
    "draw_subject": "subject",
    "render_subject": "subject",
    "SITES": "scanner",
    "ensure_cohort": "cohort",
    "generate_cohort": "cohort",
    "native_to_mni": "cohort",
    "subject_paths": "cohort",
    "register": "cli",
    "disease_effects": "effects",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
