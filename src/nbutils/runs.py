"""What a notebook run opens, found from its parameters: its dataset and its normative model.

Every notebook calls these instead of re-deriving folders, so the dataset's
location, its subject table and the sentence that says where the numbers came
from are the same in every notebook, figure and metrics file.

``params`` is the validated parameters object of a notebook
(:func:`nbutils.params.validate_parameters`); each function names the
attributes it reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "NormativeRun",
    "RunDataset",
    "cohort_label",
    "extend_dataset",
    "model_folder",
    "open_dataset",
    "open_normative_model",
    "open_prep_dataset",
    "prep_label",
]

Space = Literal["mni", "native"]


@dataclass(frozen=True)
class RunDataset:
    """A run's dataset: where it is, one row per scan, its grid and the sentence naming it."""

    root: Path
    table: pd.DataFrame
    source: str
    resolution: float
    kind: Literal["synthetic", "prep"] = "synthetic"
    extension: dict | None = None

    @property
    def has_truth(self) -> bool:
        """Whether lesion ground truth can exist: the synthetic cohort's masks or BraTS ``seg`` labels."""
        return self.kind == "synthetic" or bool(self.table.get("seg_path", pd.Series(dtype=object)).notna().any())

    def lesion_masks(self, participant_ids: list[str]) -> tuple[np.ndarray | None, str]:
        """Ground-truth lesion masks on the model grid, or ``None`` and the reason there are none.

        The synthetic cohort has its generator's tumour masks; a preprocessed
        dataset has truth only where its raw dataset had BraTS ``seg`` labels,
        which are carried to the model grid through the scan's saved
        registration. Every subject asked for must have one, else ``None``.
        """
        import nibabel as nib

        if not len(participant_ids):
            return None, f"no lesion subjects in the {self.source}"
        if self.kind == "synthetic":
            from nbutils.synth.cohort import subject_paths

            return np.stack([np.asarray(nib.load(subject_paths(self.root, pid)["tumour"]).dataobj) > 0
                             for pid in participant_ids]), "synthetic ground truth"
        rows = self.table.set_index("participant_id").reindex(participant_ids)
        seg = rows.get("seg_path", pd.Series(index=rows.index, dtype=object))
        missing = [pid for pid, s in seg.items() if not isinstance(s, str) or not s]
        if missing:
            return None, (f"no lesion ground truth in the {self.source} for {len(missing)} of "
                          f"{len(participant_ids)} subject(s) (only BraTS seg labels count), e.g. {missing[0]}")
        return np.stack([_seg_on_grid(row, self.resolution) for _, row in rows.iterrows()]), \
            "BraTS seg labels (tumour = any label > 0), moved to the model grid with the prep registration"

    def counts(self) -> pd.DataFrame:
        """Subjects per diagnosis (one row), after printing where the data come from."""
        print(self.source)
        return self.table["diagnosis"].value_counts().rename("subjects").to_frame().T


def cohort_label(profile: str, cohort_seed: int, space: Space = "mni", resolution: float = 2.0) -> str:
    """The one wording of the synthetic cohort's data source.

    >>> cohort_label("quick", 0, "mni", 2.0)
    'synthetic cohort (quick profile, cohort_seed 0, MNI space, 2 mm grid)'
    """
    where = f"MNI space, {resolution:g} mm grid" if space == "mni" else "native whole-head scans"
    return f"synthetic cohort ({profile} profile, cohort_seed {cohort_seed}, {where})"


#: Parameters of notebook 00 that say how large each cohort is.
_SIZES = {
    "mni": ("n_healthy", "n_mci", "n_ad", "n_tumour"),
    "native": ("n_native_healthy", "n_native_tumour"),
}


def _generate(params: Any, root: Path, space: Space, jobs: int) -> None:
    from nbutils.synth import ensure_cohort

    if space == "mni":
        sizes = dict(n_healthy=params.n_healthy, n_mci=params.n_mci, n_ad=params.n_ad,
                     n_tumour=params.n_tumour, resolution=params.resolution)
    else:
        sizes = dict(n_healthy=params.n_native_healthy, n_mci=0, n_ad=0, n_tumour=params.n_native_tumour)
    ensure_cohort(root, space=space, seed=params.cohort_seed, jobs=jobs, **sizes)


def _manifest(root: Path, params: Any) -> dict:
    """The generator's manifest of an existing cohort, checked against the run."""
    import json

    from nbutils.synth.cohort import GENERATOR_VERSION, MANIFEST

    path = root / MANIFEST
    rerun = f"run notebook 00 with profile {params.profile!r} and data_dir {params.data_dir!r} first"
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic cohort at {root}: {rerun} (it generates the cohorts)")
    args = json.loads(path.read_text())["args"]
    if args.get("generator_version") != GENERATOR_VERSION:
        raise FileNotFoundError(f"{root} was made by generator version {args.get('generator_version')}, "
                                f"this is version {GENERATOR_VERSION}: {rerun}")
    if args["seed"] != params.cohort_seed:
        raise ValueError(f"{root} was generated with cohort_seed {args['seed']}, this run asks for "
                         f"{params.cohort_seed}: {rerun}")
    return args


def open_dataset(params: Any, space: Space = "mni", jobs: int = 1) -> RunDataset:
    """Open the dataset of a run: ``params.dataset`` if set, else the synthetic cohort (notebook 00).

    Parameters
    ----------
    params : validated notebook parameters
        Reads ``dataset`` (when a notebook declares it and it is not empty, the
        folder written by ``nbutils prep`` is opened with
        :func:`open_prep_dataset` and nothing else is read), ``data_dir``,
        ``profile`` and ``cohort_seed``. Notebook 00 also
        declares the cohort sizes (``n_healthy``, ``n_mci``, ``n_ad``,
        ``n_tumour``, ``resolution``; ``n_native_healthy``, ``n_native_tumour``):
        with those, the cohort is generated if it is missing or was made with
        other arguments. The other notebooks open what notebook 00 wrote.
    space : {"mni", "native"}
        The MNI-space cohort the models use, or the whole-head native scans
        that preprocessing starts from.
    jobs : int
        Worker processes when the cohort is generated.

    Returns
    -------
    RunDataset
        ``root`` is ``<data_dir>/synthetic/<profile>-<space>``; ``table`` comes
        from :func:`nbutils.datasets.load_bids`; ``resolution`` is the grid
        the cohort was generated on.

    Raises
    ------
    FileNotFoundError
        When the cohort is missing or was made by another generator version
        (and ``params`` cannot generate it).
    ValueError
        When it was generated with another ``cohort_seed``.
    """
    from nbutils.datasets import load_bids

    if getattr(params, "dataset", ""):
        return open_prep_dataset(params.dataset)
    root = Path(params.data_dir) / "synthetic" / f"{params.profile}-{space}"
    if all(hasattr(params, name) for name in _SIZES[space]):
        _generate(params, root, space, jobs)
    args = _manifest(root, params)
    resolution = float(args.get("resolution") or 2.0)
    return RunDataset(root, load_bids(root), cohort_label(params.profile, params.cohort_seed, space, resolution),
                      resolution)


def prep_label(folder: str | Path, n_scans: int) -> str:
    """The one wording of a preprocessed dataset's data source.

    >>> prep_label("/data/ixi-prep", 12)
    'preprocessed dataset ixi-prep (12 scans, prep.tsv)'
    """
    return f"preprocessed dataset {Path(folder).name} ({n_scans} scans, prep.tsv)"


#: Demographic columns a preprocessed dataset's participants table must have.
DEMOGRAPHICS = ("age", "sex", "site", "diagnosis")


def open_prep_dataset(folder: str | Path) -> RunDataset:
    """Open a folder written by ``nbutils prep`` as a run's dataset.

    Parameters
    ----------
    folder : path
        Holds ``prep.tsv`` (one row per scan) and the derivatives. Demographics
        come from ``<folder>/participants.tsv`` (``participant_id`` + ``age``,
        ``sex``, ``site``, ``diagnosis``) when it exists, otherwise from the raw
        dataset the scans were read from (IXI sheet, BIDS ``participants.tsv``,
        BraTS folder, re-read with :mod:`nbutils.datasets`).

    Returns
    -------
    RunDataset
        ``kind="prep"``; ``table`` has one row per successfully preprocessed scan
        with ``path`` = the preprocessed MNI image (``raw_path`` = the input),
        ``mask_path`` and, for BraTS, ``seg_path``; ``resolution`` is the grid of
        the preprocessed images; ``source`` is :func:`prep_label`.

    Raises
    ------
    FileNotFoundError
        No ``prep.tsv``, or no participants table and no readable raw dataset.
    ValueError
        No scan finished preprocessing, or demographics are missing a column.
    """
    import nibabel as nib

    from nbutils.datasets import DatasetError

    folder = Path(folder).expanduser().resolve()
    tsv = folder / "prep.tsv"
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv} not found: dataset must be a folder written by `nbutils prep --out`")
    prep = pd.read_csv(tsv, sep="\t")
    done = prep[prep["status"] == "done"].copy()
    if done.empty:
        raise ValueError(f"{tsv}: no scan has status 'done' ({len(prep)} rows); see its 'error' column")
    if len(done) < len(prep):
        import warnings

        warnings.warn(f"{tsv}: {len(prep) - len(done)} scan(s) failed preprocessing and are left out", stacklevel=2)
    try:
        demo = _demographics(folder, done)
    except (DatasetError, OSError, IndexError) as err:
        raise FileNotFoundError(
            f"{folder}: no participants.tsv and the raw dataset could not be re-read ({err}); write "
            f"{folder / 'participants.tsv'} with participant_id, {', '.join(DEMOGRAPHICS)}") from err
    lacking = [c for c in DEMOGRAPHICS if c not in demo]
    if lacking:
        raise ValueError(f"{folder}: participants table lacks column(s) {lacking}")
    table = done.rename(columns={"path": "raw_path", "preproc_path": "path"})
    keep = ["participant_id", *DEMOGRAPHICS, *[c for c in ("seg_path",) if c in demo]]
    table = table.merge(demo[keep].drop_duplicates("participant_id"), on="participant_id", how="left")
    resolution = float(nib.load(table["path"].iloc[0]).header.get_zooms()[0])
    return RunDataset(folder, table.reset_index(drop=True), prep_label(folder, len(table)), resolution, "prep")


def _demographics(folder: Path, prep: pd.DataFrame) -> pd.DataFrame:
    """``participants.tsv`` beside ``prep.tsv``, else the raw datasets' own tables."""
    from nbutils.datasets import _read_participants, load_bids, load_brats, load_ixi

    own = folder / "participants.tsv"
    if own.is_file():
        return _read_participants(own)
    tables = []
    for dataset, rows in prep.groupby("dataset"):
        first = Path(rows["path"].iloc[0])
        if dataset == "IXI":
            tables.append(load_ixi(first.parent))
        elif dataset == "BraTS":
            tables.append(load_brats(first.parents[1]))
        else:
            session = rows["session"].iloc[0]
            tables.append(load_bids(first.parents[3 if isinstance(session, str) and session else 2]))
    return pd.concat(tables, ignore_index=True)


def _seg_on_grid(row: pd.Series, resolution: float) -> np.ndarray:
    """A BraTS ``seg`` label map as a boolean tumour mask on the model grid (the scan's prep transform)."""
    from types import SimpleNamespace

    import nibabel as nib

    from nbutils.prep.steps import reorient_to_ras, resample_to_standard

    xfm = Path(row["xfm_path"])
    warp = xfm.with_suffix("").with_suffix(".nii.gz")  # SyN: <scan>_..._xfm.nii.gz beside the affine
    forward = [str(warp), str(xfm)] if warp.is_file() else [str(xfm)]
    seg = nib.load(row["seg_path"])
    binary = nib.Nifti1Image((np.asarray(seg.dataobj) > 0).astype(np.float32), seg.affine)
    out = resample_to_standard(reorient_to_ras(binary), SimpleNamespace(forward=forward), resolution, "nearest")
    return np.asarray(out.dataobj) > 0


def extend_dataset(params: Any, data: RunDataset, at_least: Mapping[str, int], jobs: int = 1,
                   name: str = "extra") -> RunDataset:
    """The run's MNI cohort with at least ``at_least[diagnosis]`` subjects of each diagnosis named.

    A task may need more subjects than the shared cohort of notebook 00 holds
    (four-class tumour typing needs tens per class; the normative notebooks
    only a few tumours). The missing subjects are generated once, as an
    **extension** of that cohort: same generator, cohort seed and grid, subject
    indices after the cohort's last, so the new ids never collide with it.
    The extension is cached in ``<data_dir>/synthetic/<profile>-mni-<name>``
    and regenerated only when its arguments change.

    Parameters
    ----------
    params : validated notebook parameters
        Reads ``data_dir``, ``profile`` and ``cohort_seed``.
    data : RunDataset
        The cohort from :func:`open_dataset` (MNI space).
    at_least : mapping
        Diagnosis (``CN``, ``MCI``, ``AD``, ``glioma``, ``meningioma``,
        ``pituitary``) -> number of subjects wanted.
    jobs : int
        Worker processes for the generation.
    name : str
        Suffix of the extension's folder.

    Returns
    -------
    RunDataset
        The combined table (column ``root``: each subject's BIDS root) and
        ``extension`` = the extension's manifest (subjects generated, seconds
        per subject, wall seconds), or ``None`` when nothing was missing.
    """
    import json

    from nbutils.datasets import load_bids
    from nbutils.synth import ensure_cohort
    from nbutils.synth.cohort import MANIFEST
    from nbutils.synth.tumours import TUMOUR_CLASSES

    known = {"CN", "MCI", "AD", *TUMOUR_CLASSES}
    unknown = set(at_least) - known
    if unknown:
        raise ValueError(f"cannot generate diagnoses {sorted(unknown)}; known: {sorted(known)}")
    have = data.table.groupby("diagnosis")["participant_id"].nunique()
    missing = {dx: max(0, int(n) - int(have.get(dx, 0))) for dx, n in at_least.items()}
    table = data.table.assign(root=str(data.root))
    if not any(missing.values()):
        return RunDataset(data.root, table, data.source, data.resolution)
    n_tumour = 3 * max((missing.get(t, 0) for t in TUMOUR_CLASSES), default=0)  # split evenly over the classes
    first = int(data.table["participant_id"].str.extract(r"(\d+)$")[0].astype(int).max())
    root = Path(params.data_dir) / "synthetic" / f"{params.profile}-mni-{name}"
    ensure_cohort(root, n_healthy=missing.get("CN", 0), n_mci=missing.get("MCI", 0), n_ad=missing.get("AD", 0),
                  n_tumour=n_tumour, space="mni", seed=params.cohort_seed, jobs=jobs, resolution=data.resolution,
                  first_index=first)
    manifest = json.loads((root / MANIFEST).read_text())
    extra = load_bids(root).assign(root=str(root))
    combined = pd.concat([table, extra], ignore_index=True)
    source = f"{data.source}, extended by {len(extra)} generated subjects (same generator and cohort seed)"
    return RunDataset(data.root, combined, source, data.resolution, extension=manifest)


def model_folder(params: Any, name: str = "normative_ae") -> Path:
    """``<data_dir>/models/<profile>/<name>``: where a run's trained model lives."""
    return Path(params.data_dir) / "models" / params.profile / name


@dataclass
class NormativeRun:
    """A trained normative model with everything notebook 02 saved beside it."""

    folder: Path
    checkpoint: Path
    model: Any
    stats: Any
    subjects: pd.DataFrame
    training: dict
    guard: Any = None  # nbutils.normative.guard.ScanGuard, None for model folders older than the guard

    def check(self, volume: np.ndarray, z: np.ndarray):
        """The scan guard's verdict on one scan (:func:`nbutils.normative.guard.check_scan`)."""
        from nbutils.normative.guard import check_scan

        return check_scan(self.guard, self.stats, volume, z)

    def split(self, name: str, diagnoses: list[str] | None = None) -> pd.DataFrame:
        """The subjects of one split (``train``, ``val``, ``test``), optionally of some diagnoses."""
        rows = self.subjects[self.subjects["split"] == name]
        if diagnoses is not None:
            rows = rows[rows["diagnosis"].isin(diagnoses)]
        return rows.reset_index(drop=True)

    def reference(self) -> pd.DataFrame:
        """The healthy reference subjects: every subject outside the test split (train and val folds)."""
        return self.subjects[self.subjects["split"] != "test"].reset_index(drop=True)


def open_normative_model(params: Any) -> NormativeRun:
    """Load the normative autoencoder that notebook 02 trained for this run.

    Parameters
    ----------
    params : validated notebook parameters
        Reads ``data_dir`` and ``profile``.

    Raises
    ------
    FileNotFoundError
        When notebook 02 has not been run with the same profile and data folder.
    """
    import json

    from nbutils.normative.guard import load_guard
    from nbutils.normative.stats import load_stats
    from nbutils.normative.train import load_autoencoder

    folder = model_folder(params)
    checkpoint = folder / "ensemble.json"  # the cross-fitted members (older runs: one checkpoint)
    if not checkpoint.exists():
        checkpoint = folder / "checkpoints" / "best.ckpt"
    if not checkpoint.exists():
        raise FileNotFoundError(
            f"no normative model in {folder} (ensemble.json): run notebook 02 with profile {params.profile!r} and "
            f"data_dir {params.data_dir!r} first"
        )
    return NormativeRun(
        folder=folder,
        checkpoint=checkpoint,
        model=load_autoencoder(checkpoint),
        stats=load_stats(checkpoint),
        subjects=pd.read_csv(folder / "subjects.tsv", sep="\t"),
        training=json.loads((folder / "training.json").read_text()),
        guard=load_guard(checkpoint),
    )
