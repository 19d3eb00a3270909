"""2D slice datasets: one folder of PNG/JPG slices per class.

Public brain-tumour slice collections (e.g. the Kaggle "Brain Tumor MRI"
sets) look like ``root/<class>/*.jpg`` or ``root/{Training,Testing}/<class>/*.jpg``.
Two traps make their published accuracies optimistic:

* **several slices of one patient** end up on both sides of a random split,
  so the model recognises the patient, not the tumour type; and
* **duplicates**: the same image (or a re-saved, resized copy) appears more
  than once, sometimes under different classes.

So, before any training: :func:`load_slice_folder` reads the table (patient
ids parsed from file names when a pattern is given), :func:`find_duplicates`
reports exact (identical pixels) and near (perceptual hash within a Hamming
distance) duplicates, and :func:`split_slices` splits **by patient** — or, when
no patient ids exist, warns loudly and keeps at least every duplicate cluster
on one side.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nbutils.classify.splits import SubjectSplit, subject_split

__all__ = [
    "NoPatientIdWarning",
    "export_slices",
    "find_duplicates",
    "hash_images",
    "drop_duplicates",
    "duplicate_clusters",
    "load_slice_folder",
    "load_slice_images",
    "normalise_label",
    "split_slices",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_SPLIT_NAMES = {"train", "training", "test", "testing", "val", "validation"}
_LABELS = {
    "glioma": "glioma",
    "gliomatumor": "glioma",
    "meningioma": "meningioma",
    "meningiomatumor": "meningioma",
    "pituitary": "pituitary",
    "pituitarytumor": "pituitary",
    "notumor": "no_tumour",
    "notumour": "no_tumour",
    "no": "no_tumour",
    "normal": "no_tumour",
    "healthy": "no_tumour",
}


class NoPatientIdWarning(UserWarning):
    """Slices cannot be grouped by patient: a split may put one patient on both sides."""


def normalise_label(folder: str) -> str:
    """Map the usual class-folder spellings to glioma / meningioma / pituitary / no_tumour."""
    key = re.sub(r"[^a-z]", "", folder.lower())
    return _LABELS.get(key, folder)


def load_slice_folder(
    root: str | os.PathLike, patient_pattern: str | None = None, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> pd.DataFrame:
    """Table of the slices under ``root`` (``<class>/`` or ``<split>/<class>/`` folders).

    Parameters
    ----------
    root : path-like
        Dataset folder.
    patient_pattern : str, optional
        Regular expression applied to the file name (``re.search``); its group
        ``patient`` (or first group) is the patient id, e.g.
        ``r"^(?P<patient>sub-[0-9A-Za-z]+)_"``. Files it does not match get no id.
    extensions : sequence of str
        Image file suffixes (case-insensitive).

    Returns
    -------
    pandas.DataFrame
        ``path``, ``label`` (normalised), ``folder`` (as on disk), ``source_split``
        (``Training``/``Testing`` when the dataset ships one, else NaN), ``patient_id`` (or NaN).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"slice dataset folder not found: {root}")
    exts = {e.lower() for e in extensions}
    pattern = re.compile(patient_pattern) if patient_pattern else None
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts):
        parts = path.relative_to(root).parts
        if len(parts) == 2:
            split, folder = np.nan, parts[0]
        elif len(parts) == 3 and parts[0].lower() in _SPLIT_NAMES:
            split, folder = parts[0], parts[1]
        else:
            raise ValueError(f"{path}: expected <class>/<image> or <Training|Testing>/<class>/<image> under {root}")
        patient = np.nan
        if pattern is not None:
            match = pattern.search(path.name)
            if match:
                patient = match.groupdict().get("patient") or (match.group(1) if match.groups() else match.group(0))
        rows.append(
            {"path": str(path), "label": normalise_label(folder), "folder": folder,
             "source_split": split, "patient_id": patient}
        )  # fmt: skip
    if not rows:
        raise ValueError(f"no {'/'.join(sorted(exts))} images found under {root}")
    return pd.DataFrame(rows)


def _open_gray(path: str):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("L")


def hash_images(paths: Sequence[str], hash_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """Pixel digest (exact duplicates) and perceptual hash (near duplicates) of each image."""
    import imagehash

    rows = []
    for path in tqdm(paths, desc="hashing slices", disable=not progress):
        img = _open_gray(path)
        digest = hashlib.sha1(np.asarray(img).tobytes() + str(img.size).encode()).hexdigest()
        rows.append({"path": path, "pixel_sha1": digest, "phash": str(imagehash.phash(img, hash_size=hash_size))})
    return pd.DataFrame(rows)


def _hash_bits(hexes: Sequence[str]) -> np.ndarray:
    return np.array([np.unpackbits(np.frombuffer(bytes.fromhex(h), np.uint8)) for h in hexes], dtype=bool)


def find_duplicates(
    table: pd.DataFrame, max_distance: int = 4, hashes: pd.DataFrame | None = None, progress: bool = True
) -> pd.DataFrame:
    """Pairs of exact and near-duplicate slices.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`load_slice_folder` (needs ``path`` and ``label``).
    max_distance : int
        Largest Hamming distance between 64-bit perceptual hashes counted as
        a near duplicate (0–4 catches re-saved and slightly resized copies).
    hashes : pandas.DataFrame, optional
        Precomputed :func:`hash_images` output.

    Returns
    -------
    pandas.DataFrame
        ``i``, ``j`` (row positions in ``table``, i < j), ``path_i``, ``path_j``,
        ``kind`` ("exact" or "near"), ``distance``, ``same_label``.
    """
    paths = table["path"].tolist()
    hashes = hash_images(paths, progress=progress) if hashes is None else hashes
    bits = _hash_bits(hashes["phash"].tolist())
    sha = hashes["pixel_sha1"].to_numpy()
    labels = table["label"].to_numpy()
    rows = []
    for i in range(len(paths) - 1):
        dist = (bits[i + 1 :] != bits[i]).sum(1)
        exact = sha[i + 1 :] == sha[i]
        for k in np.flatnonzero((dist <= max_distance) | exact):
            j = i + 1 + int(k)
            rows.append(
                {"i": i, "j": j, "path_i": paths[i], "path_j": paths[j],
                 "kind": "exact" if exact[k] else "near", "distance": int(dist[k]),
                 "same_label": bool(labels[i] == labels[j])}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["i", "j", "path_i", "path_j", "kind", "distance", "same_label"])


def duplicate_clusters(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Connected components of the duplicate graph: one cluster id per row."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in zip(pairs["i"], pairs["j"], strict=True):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(a) for a in range(n)])


def drop_duplicates(table: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one slice per duplicate cluster; drop clusters whose copies disagree on the label.

    Returns
    -------
    (kept, dropped)
        ``kept`` is ``table`` without the extra copies (index reset);
        ``dropped`` lists the removed rows with a ``reason`` column.
    """
    cluster = duplicate_clusters(len(table), pairs)
    frame = table.reset_index(drop=True).assign(_cluster=cluster)
    n_labels = frame.groupby("_cluster")["label"].transform("nunique")
    first = ~frame.duplicated("_cluster")
    conflict = n_labels > 1
    keep = first & ~conflict
    dropped = frame[~keep].assign(reason=np.where(conflict[~keep], "label conflict", "duplicate copy"))
    return frame[keep].drop(columns="_cluster").reset_index(drop=True), dropped.drop(columns="_cluster")


def split_slices(
    table: pd.DataFrame,
    pairs: pd.DataFrame | None = None,
    test_size: float = 0.2,
    n_folds: int = 5,
    seed: int = 0,
) -> tuple[SubjectSplit, np.ndarray]:
    """Split slices by patient (stratified by label); warn when there are no patient ids.

    Without patient ids each slice is its own group, except that duplicate
    clusters (from ``pairs``) are kept together — this cannot stop two
    *different* slices of one patient from landing on both sides, which is
    what the :class:`NoPatientIdWarning` says.

    Returns
    -------
    (SubjectSplit, groups)
        The split over group ids, and the group id of every row of ``table``
        (pass both to :func:`nbutils.classify.experiment.cross_validate`).
    """
    ids = table["patient_id"] if "patient_id" in table else pd.Series(np.nan, index=table.index)
    if ids.isna().all():
        warnings.warn(
            "No patient IDs in this slice dataset: slices of one patient can end up in both the "
            "training and the test set, so test accuracy will be optimistic (the model may recognise "
            "patients rather than tumours). Only exact/near-duplicate clusters are kept together. "
            "Prefer a dataset with patient IDs, or report results as slice-level and leaky.",
            NoPatientIdWarning,
            stacklevel=2,
        )
        cluster = duplicate_clusters(len(table), pairs if pairs is not None else pd.DataFrame({"i": [], "j": []}))
        groups = np.array([f"slice-{c:06d}" for c in cluster])
    elif ids.isna().any():
        raise ValueError(f"{int(ids.isna().sum())} slices have no patient id (check patient_pattern)")
    else:
        groups = ids.astype(str).to_numpy()
    labels = table["label"].to_numpy()
    # a duplicate cluster / patient with several labels is labelled by its most frequent label
    frame = pd.DataFrame({"g": groups, "label": labels})
    majority = frame.groupby("g")["label"].agg(lambda v: v.value_counts().index[0])
    split = subject_split(majority.index.tolist(), majority.tolist(), test_size=test_size, n_folds=n_folds, seed=seed)
    return split, groups


def load_slice_images(paths: Sequence[str], size: tuple[int, int] = (64, 64), progress: bool = True) -> np.ndarray:
    """Greyscale slices resized to ``size``, each scaled to zero mean and unit SD: ``(N, H, W)``."""
    from PIL import Image

    out = np.empty((len(paths), *size), np.float32)
    for k, path in enumerate(tqdm(paths, desc="loading slices", disable=not progress)):
        img = np.asarray(_open_gray(path).resize(size[::-1], Image.BILINEAR), np.float32)
        out[k] = (img - img.mean()) / (img.std() + 1e-6)
    return out


def export_slices(
    volumes: np.ndarray,
    subjects: Sequence[str],
    labels: Sequence[str],
    out_dir: str | os.PathLike,
    n_slices: int = 5,
    spacing: int = 2,
    centres: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Write axial PNG slices of volumes as a ``<label>/<subject>_z<k>.png`` slice dataset.

    Parameters
    ----------
    volumes : array ``(N, X, Y, Z)``
    subjects, labels : sequences of str
        Subject id (becomes the file-name prefix, i.e. the patient id) and class folder.
    out_dir : path-like
        Dataset root to create.
    n_slices, spacing : int
        ``n_slices`` axial slices ``spacing`` voxels apart, centred on ``centres[i]``
        (e.g. the tumour's axial level) or on the middle of the volume.

    Intensities are scaled to 0–255 per volume (1st–99.5th percentile).
    Files are written atomically.
    """
    from PIL import Image

    from nbutils.io import write_bytes

    rows = []
    vols = np.asarray(volumes, np.float32)
    depth = vols.shape[-1]
    for i, (vol, subject, label) in enumerate(zip(vols, subjects, labels, strict=True)):
        mid = depth // 2 if centres is None else int(centres[i])
        levels = [int(np.clip(mid + spacing * (k - n_slices // 2), 0, depth - 1)) for k in range(n_slices)]
        lo, hi = np.percentile(vol, [1, 99.5])
        for z in sorted(set(levels)):
            img = np.clip((vol[:, :, z] - lo) / (hi - lo + 1e-6), 0, 1)
            img = np.flipud(img.T)  # anterior up
            buf = io.BytesIO()
            Image.fromarray((img * 255).astype(np.uint8)).save(buf, format="PNG")
            path = Path(out_dir) / label / f"{subject}_z{z:03d}.png"
            write_bytes(path, buf.getvalue())
            rows.append({"path": str(path), "label": label, "patient_id": subject, "z": z})
    return pd.DataFrame(rows)
