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

import pandas as pd

__all__ = [
    "NormativeRun",
    "RunDataset",
    "cohort_label",
    "extend_dataset",
    "model_folder",
    "open_dataset",
    "open_normative_model",
]

Space = Literal["mni", "native"]


@dataclass(frozen=True)
class RunDataset:
    """A run's dataset: where it is, one row per scan, its grid and the sentence naming it."""

    root: Path
    table: pd.DataFrame
    source: str
    resolution: float
    extension: dict | None = None

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
    """Open the synthetic cohort of a run (notebook 00 generates it).

    Parameters
    ----------
    params : validated notebook parameters
        Reads ``data_dir``, ``profile`` and ``cohort_seed``. Notebook 00 also
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

    root = Path(params.data_dir) / "synthetic" / f"{params.profile}-{space}"
    if all(hasattr(params, name) for name in _SIZES[space]):
        _generate(params, root, space, jobs)
    args = _manifest(root, params)
    resolution = float(args.get("resolution") or 2.0)
    return RunDataset(root, load_bids(root), cohort_label(params.profile, params.cohort_seed, space, resolution),
                      resolution)


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

    def split(self, name: str, diagnoses: list[str] | None = None) -> pd.DataFrame:
        """The subjects of one split (``train``, ``val``, ``test``), optionally of some diagnoses."""
        rows = self.subjects[self.subjects["split"] == name]
        if diagnoses is not None:
            rows = rows[rows["diagnosis"].isin(diagnoses)]
        return rows.reset_index(drop=True)


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

    from nbutils.normative.stats import load_stats
    from nbutils.normative.train import load_autoencoder

    folder = model_folder(params)
    checkpoint = folder / "checkpoints" / "best.ckpt"
    if not checkpoint.exists():
        raise FileNotFoundError(
            f"{checkpoint} not found: run notebook 02 with profile {params.profile!r} and "
            f"data_dir {params.data_dir!r} first"
        )
    return NormativeRun(
        folder=folder,
        checkpoint=checkpoint,
        model=load_autoencoder(checkpoint),
        stats=load_stats(checkpoint),
        subjects=pd.read_csv(folder / "subjects.tsv", sep="\t"),
        training=json.loads((folder / "training.json").read_text()),
    )
