"""Subject splits and a LightningDataModule over preprocessed MNI-grid volumes.

The input is a table with one row per scan and at least ``participant_id``,
``path`` (a NIfTI on the standard grid, already skull-stripped and
intensity-standardised) and ``diagnosis``, e.g. from
:func:`nbutils.datasets.load_bids`. Only healthy subjects (``CN``) are used to
train and validate the normative model; they are split by subject, so all
scans of a person fall in one split. A held-out share of healthy subjects and
every patient form the test set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "NormativeDataModule",
    "VolumeDataset",
    "assign_folds",
    "assign_splits",
    "balanced_order",
    "fold_table",
    "grid_for_shape",
    "load_volume",
    "load_volumes",
    "read_table",
]

HEALTHY = "CN"
SPLITS = ("train", "val", "test")


#: Columns the healthy splits are balanced on when the table has them.
STRATIFY = ("site", "age")


def _strata(table: pd.DataFrame, subjects: np.ndarray, stratify: Sequence[str]) -> np.ndarray:
    """One stratum label per subject: the named columns, numeric ones cut into tertiles."""
    first = table.drop_duplicates("participant_id").set_index("participant_id").loc[subjects]
    keys = pd.Series([""] * len(subjects), index=first.index)
    for col in stratify:
        if col not in first.columns or first[col].isna().all():
            continue
        values = first[col]
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > 3:
            values = pd.qcut(values.rank(method="first"), 3, labels=False)
        keys = keys + "|" + values.astype(str)
    return keys.to_numpy()


def balanced_order(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of items in which every prefix samples the strata proportionally.

    Items are shuffled within each stratum and placed at evenly spaced, randomly
    offset ranks (systematic sampling), so taking the first *n* items draws each
    stratum in proportion to its size. Used to give the healthy reference and
    test sets the site and age mix of the whole healthy cohort.

    Parameters
    ----------
    strata : array of labels, one per item
    rng : numpy Generator

    Returns
    -------
    int array
        A permutation of ``range(len(strata))``.
    """
    strata = np.asarray(strata)
    rank = np.empty(len(strata))
    for label in np.unique(strata):
        idx = np.flatnonzero(strata == label)
        idx = idx[rng.permutation(len(idx))]
        rank[idx] = (np.arange(len(idx)) + rng.uniform()) / len(idx)
    return np.lexsort((rng.uniform(size=len(strata)), rank))


def read_table(table: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """Return ``table`` itself, or read it from a TSV/CSV file; check required columns."""
    if not isinstance(table, pd.DataFrame):
        path = Path(table)
        if not path.exists():
            raise FileNotFoundError(f"subject table not found: {path}")
        table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        source = str(path)
    else:
        source = "table"
    missing = [c for c in ("participant_id", "path", "diagnosis") if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing} (has {list(table.columns)})")
    return table


def assign_splits(
    table: pd.DataFrame,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    test_seed: int | None = None,
    healthy: str = HEALTHY,
    stratify: Sequence[str] = STRATIFY,
) -> pd.DataFrame:
    """Split healthy subjects into train/val/test; every other subject goes to test.

    The healthy validation (reference) and test sets are drawn balanced on
    ``stratify`` (site and age tertiles by default, where the table has them):
    a reference set that misses a site makes every scan of that site look
    deviant.

    Parameters
    ----------
    table : DataFrame
        Needs ``participant_id`` and ``diagnosis``.
    val_fraction, test_fraction : float
        Shares of the healthy *subjects* held out for validation (normative
        statistics, thresholds) and for testing.
    seed : int
        Seed of the train/validation split.
    test_seed : int, optional
        Seed of the healthy test selection (``seed`` if omitted). Keeping it fixed
        while varying ``seed`` re-draws the reference scans but keeps the test set,
        which is how the stability analysis retrains.
    healthy : str
        Diagnosis label of healthy subjects.
    stratify : sequence of str
        Columns to balance the splits on; missing columns are ignored, ``()``
        draws plain random splits.

    Returns
    -------
    DataFrame
        A copy with a ``split`` column.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and leave subjects for training"
        )
    table = table.copy()
    subjects = np.array(sorted(table.loc[table["diagnosis"] == healthy, "participant_id"].unique()))
    if len(subjects) < 3:
        raise ValueError(f"need at least 3 healthy ({healthy}) subjects, found {len(subjects)}")
    n_test = int(round(test_fraction * len(subjects)))
    n_val = max(1, int(round(val_fraction * len(subjects)))) if val_fraction > 0 else 0
    strata = _strata(table, subjects, stratify)
    test_rng = np.random.default_rng(seed if test_seed is None else test_seed)
    order = balanced_order(strata, test_rng)
    test = set(subjects[order[:n_test]])
    keep = ~np.isin(subjects, list(test))
    rest, rest_strata = subjects[keep], strata[keep]
    val = set(rest[balanced_order(rest_strata, np.random.default_rng([seed, 1]))[:n_val]])
    if len(rest) - n_val < 1:
        raise ValueError(f"no healthy subjects left for training ({len(subjects)} in total)")

    def which(row) -> str:
        if row["diagnosis"] != healthy:
            return "test"
        pid = row["participant_id"]
        return "test" if pid in test else "val" if pid in val else "train"

    table["split"] = table.apply(which, axis=1)
    return table


def assign_folds(
    table: pd.DataFrame, n_folds: int, seed: int = 0, stratify: Sequence[str] = STRATIFY
) -> pd.DataFrame:
    """Cross-fitting folds of the healthy reference: every non-test healthy subject gets one.

    The reference (all subjects not in the ``test`` split) is cut into
    ``n_folds`` folds balanced on ``stratify``; the model of fold *k* trains on
    the other folds, so every reference subject gets an out-of-sample residual.
    Test rows get fold ``-1``.

    Returns
    -------
    DataFrame
        A copy with a ``fold`` column (and ``split`` rewritten: fold 0 is
        ``val``, the rest ``train``, which is what a single model would use).
    """
    if "split" not in table.columns:
        raise ValueError("table has no 'split' column; split it with assign_splits first")
    if n_folds < 2:
        raise ValueError(f"cross-fitting needs n_folds >= 2, got {n_folds}")
    table = table.copy()
    ref = table["split"] != "test"
    subjects = np.array(sorted(table.loc[ref, "participant_id"].unique()))
    if len(subjects) < 2 * n_folds:
        raise ValueError(f"{len(subjects)} reference subjects cannot fill {n_folds} folds of >= 2")
    order = balanced_order(_strata(table[ref], subjects, stratify), np.random.default_rng([seed, 3]))
    fold_of = {subjects[i]: rank % n_folds for rank, i in enumerate(order)}
    table["fold"] = table["participant_id"].map(fold_of).where(ref, -1).astype(int)
    table.loc[ref, "split"] = np.where(table.loc[ref, "fold"] == 0, "val", "train")
    return table


def fold_table(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The split table of cross-fitting member ``k``: fold ``k`` validates, other folds train."""
    if "fold" not in table.columns:
        raise ValueError("table has no 'fold' column; add one with assign_folds")
    out = table.copy()
    ref = out["fold"] >= 0
    out.loc[ref, "split"] = np.where(out.loc[ref, "fold"] == k, "val", "train")
    return out


def grid_for_shape(shape: Sequence[int]):
    """The :func:`nbutils.anatomy.standard_grid` whose shape is ``shape``.

    Raises
    ------
    ValueError
        If no standard grid (1–8 mm) has that shape.
    """
    from nbutils.anatomy import standard_grid

    for res in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0):
        grid = standard_grid(res)
        if grid.shape == tuple(shape):
            return grid
    raise ValueError(
        f"shape {tuple(shape)} is not a standard MNI grid; pass the brain mask explicitly"
    )


def load_volume(path: str | os.PathLike, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a 3D NIfTI as float32; check it has ``shape`` (the model grid) if given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"volume not found: {path}")
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    data = np.squeeze(data)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise ValueError(
            f"{path}: shape {data.shape} is not the model grid {tuple(shape)}; "
            "resample it to the standard grid first (nbutils.anatomy.resample_to_grid)"
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: contains NaN or infinite values")
    return data


def load_volumes(paths: Sequence[str | os.PathLike], progress: bool = False) -> np.ndarray:
    """Load volumes of equal shape into one ``(N, X, Y, Z)`` float32 array."""
    from tqdm.auto import tqdm

    paths = list(paths)
    if not paths:
        raise ValueError("no volumes to load")
    first = load_volume(paths[0])
    out = np.empty((len(paths), *first.shape), dtype=np.float32)
    out[0] = first
    for i, p in enumerate(tqdm(paths[1:], desc="loading volumes", disable=not progress), start=1):
        out[i] = load_volume(p, first.shape)
    return out


class VolumeDataset(Dataset):
    """In-memory volumes with a shared brain mask and minimal intensity augmentation.

    Parameters
    ----------
    volumes : array ``(N, X, Y, Z)``
    mask : array ``(X, Y, Z)``
        Brain mask; the loss is computed inside it and augmentation touches only it.
    augment_scale, augment_shift : float
        Standard deviation of a random multiplicative (``1 + s``) and additive
        intensity change per sample, inside the mask (0 disables).
    augment_flip : bool
        Random left-right flip (off by default: brains are not symmetric).
    noise_std : float
        Denoising autoencoder (Kascenas et al. 2022): if > 0, each sample also
        carries an ``"input"``, the image plus *coarse* Gaussian noise (this SD on the coarse grid)
        inside the mask; the model reconstructs the clean ``"image"`` from it.
    noise_factor : int
        The noise is drawn on a grid ``noise_factor`` times coarser on every axis and
        up-sampled trilinearly (coarse noise hides structures, white noise does not).
    """

    def __init__(
        self,
        volumes: np.ndarray,
        mask: np.ndarray,
        augment_scale: float = 0.0,
        augment_shift: float = 0.0,
        augment_flip: bool = False,
        noise_std: float = 0.0,
        noise_factor: int = 8,
    ) -> None:
        if volumes.ndim != 4 or volumes.shape[1:] != mask.shape:
            raise ValueError(f"volumes {volumes.shape} and mask {mask.shape} do not match")
        self.volumes = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))
        self.mask = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None]
        self.augment_scale = float(augment_scale)
        self.augment_shift = float(augment_shift)
        self.augment_flip = bool(augment_flip)
        if noise_std < 0 or noise_factor < 1:
            raise ValueError(f"need noise_std >= 0 and noise_factor >= 1, got {noise_std}, {noise_factor}")
        self.noise_std = float(noise_std)
        self.noise_factor = int(noise_factor)

    def coarse_noise(self) -> torch.Tensor:
        """Gaussian noise ``(1, X, Y, Z)`` of SD ``noise_std`` drawn on a coarse grid and up-sampled."""
        shape = self.volumes.shape[1:]
        coarse = [max(1, -(-s // self.noise_factor)) for s in shape]
        noise = torch.randn(1, 1, *coarse) * self.noise_std
        return torch.nn.functional.interpolate(noise, size=shape, mode="trilinear", align_corners=False)[0]

    def __len__(self) -> int:
        return self.volumes.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.volumes[i][None]
        m = self.mask
        if self.augment_scale or self.augment_shift:
            scale = 1.0 + self.augment_scale * torch.randn(())
            shift = self.augment_shift * torch.randn(())
            x = torch.where(m > 0, x * scale + shift, x)
        if self.augment_flip and torch.rand(()) < 0.5:
            x, m = x.flip(1), m.flip(1)
        if self.noise_std:
            return {"image": x, "mask": m, "input": x + self.coarse_noise() * m}
        return {"image": x, "mask": m}


class NormativeDataModule(pl.LightningDataModule):
    """Healthy train/validation volumes for the normative autoencoder.

    Parameters
    ----------
    table : DataFrame or path
        Scans with ``participant_id``, ``path``, ``diagnosis`` and, if already
        split, ``split``; otherwise :func:`assign_splits` is applied.
    mask : array or path, optional
        Analysis mask on the model grid; by default the MNI152 brain mask with an
        extra-axial rim and the sellar region (:func:`nbutils.anatomy.load_analysis_mask`),
        so that meningiomas and pituitary adenomas lie inside what is analysed.
    batch_size, num_workers : int
    val_fraction, test_fraction, split_seed, test_seed
        Passed to :func:`assign_splits` when the table has no ``split`` column.
    augment_scale, augment_shift, augment_flip, noise_std, noise_factor
        See :class:`VolumeDataset` (training only; validation scans stay clean).
    progress : bool
        Show a progress bar while caching volumes.
    """

    def __init__(
        self,
        table: pd.DataFrame | str | os.PathLike,
        mask: np.ndarray | str | os.PathLike | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        test_seed: int | None = None,
        augment_scale: float = 0.0,
        augment_shift: float = 0.0,
        augment_flip: bool = False,
        noise_std: float = 0.0,
        noise_factor: int = 8,
        progress: bool = False,
    ) -> None:
        super().__init__()
        table = read_table(table)
        if "split" not in table.columns:
            table = assign_splits(table, val_fraction, test_fraction, split_seed, test_seed)
        bad = set(table["split"]) - set(SPLITS)
        if bad:
            raise ValueError(f"unknown split value(s) {sorted(bad)}; use {SPLITS}")
        leak = table.loc[(table["split"] != "test") & (table["diagnosis"] != HEALTHY)]
        if len(leak):
            raise ValueError(
                f"non-healthy subjects in train/val: {sorted(leak['participant_id'])[:5]}"
            )
        self.table = table.reset_index(drop=True)
        self._mask_source = mask
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = {
            "augment_scale": augment_scale,
            "augment_shift": augment_shift,
            "augment_flip": augment_flip,
            "noise_std": noise_std,
            "noise_factor": noise_factor,
        }
        self.progress = progress
        self.cache: dict[str, np.ndarray] = {}
        self.mask: np.ndarray | None = None

    def rows(self, split: str) -> pd.DataFrame:
        """The scans of one split."""
        return self.table[self.table["split"] == split]

    def _mask(self, shape: tuple[int, ...]) -> np.ndarray:
        src = self._mask_source
        if src is None:
            from nbutils.anatomy import load_analysis_mask

            return np.asarray(load_analysis_mask(grid_for_shape(shape)).dataobj) > 0
        if isinstance(src, np.ndarray):
            mask = src > 0
        else:
            mask = load_volume(src) > 0
        if mask.shape != shape:
            raise ValueError(f"mask shape {mask.shape} does not match volumes {shape}")
        return mask

    def volumes(self, split: str) -> np.ndarray:
        """The cached volumes of one split, loading them on first use."""
        key = split
        if key not in self.cache:
            paths = self.rows(split)["path"].tolist()
            if not paths:
                raise ValueError(f"split {split!r} is empty")
            self.cache[key] = load_volumes(paths, progress=self.progress)
        return self.cache[key]

    def setup(self, stage: str | None = None) -> None:
        train = self.volumes("train")
        if self.mask is None:
            self.mask = self._mask(train.shape[1:])
        self.train_set = VolumeDataset(train, self.mask, **self.augment)
        self.val_set = VolumeDataset(self.volumes("val"), self.mask)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)
