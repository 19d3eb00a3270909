"""What preprocessing costs: one normative model on ideal MNI-space scans, one on preprocessed native scans.

The synthetic generator draws subject ``i`` of a cohort from ``(seed, i, diagnosis)``
alone, whatever the output space (:func:`nbutils.synth.subject.draw_subject`).
A cohort generated twice with the same arguments therefore holds the **same
people** twice:

* in **MNI space** — the ideal: rendered straight onto the analysis grid with
  the true head size and pose removed, skull-stripped, bias-free, z-scored
  inside the true brain mask; no preprocessing error at all;
* as **native whole-head scans** — scalp, skull, head pose, bias field, site
  voxel sizes and orientations — which then go through ``nbutils prep`` (N4,
  deepbet, ANTs registration, z-scoring, resampling onto the same grid).

:func:`run_cost_study` trains the normative model on each version with the
same recipe, budget, seed and subject split (by participant), evaluates both on
the same held-out test subjects and puts the results side by side
(:func:`cost_table`). Tumour truth for *both* versions is the MNI-space lesion
mask of the generator: preprocessing registers to MNI, so any misregistration
counts against preprocessing, which is the point. Every number comes from the
synthetic cohort.

Trained models are kept under ``<data_dir>/models/<profile>/prep_cost/`` with
the key of what they were trained on; a re-run with the same data and recipe
loads them instead of training again.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CostStudy",
    "NormativeRecipe",
    "VERSIONS",
    "cost_table",
    "ensure_study_cohorts",
    "evaluate_version",
    "paired_split",
    "plot_cost",
    "plot_pair",
    "run_cost_study",
    "study_sizes",
    "train_version",
]

#: The two versions of the same subjects, in table order.
VERSIONS = {"ideal": "MNI-space ideal", "prep": "native -> prep"}
#: Healthy voxel false-positive rate of the detection thresholds.
FPR = 0.05
#: Shares of the study cohort per group (the rest are healthy).
AD_SHARE, TUMOUR_SHARE = 0.2, 0.2
#: Fewest healthy subjects: 4 cross-fitted reference subjects (2 folds of 2) and 1 test subject.
MIN_HEALTHY = 5


@dataclass(frozen=True)
class NormativeRecipe:
    """Recipe and budget of the normative models of the study (the same for both versions).

    Defaults are those of notebook 02 (``02_train_normative_autoencoder``);
    every field is a parameter of it with the same meaning.

    Attributes
    ----------
    channels, latent_channels, lr : list of int, int, float
        The autoencoder (:class:`~nbutils.normative.model.NormativeAutoencoder`).
    batch_size, noise_std, noise_factor : int, float, int
        Training data (denoising noise on a coarse grid).
    n_folds : int
        Cross-fitted ensemble members.
    test_fraction : float
        Share of the healthy subjects held out for testing.
    max_epochs, patience : int
        Training length and early-stopping patience of each member.
    max_minutes : float or None
        Wall-clock safety cap per member (stopping by time is flagged).
    """

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    latent_channels: int = 32
    lr: float = 0.002
    batch_size: int = 4
    noise_std: float = 1.0
    noise_factor: int = 8
    n_folds: int = 2
    test_fraction: float = 0.2
    max_epochs: int = 40
    patience: int = 8
    max_minutes: float | None = 5.0

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~nbutils.normative.pipeline.build_normative_model`."""
        return {
            "n_folds": self.n_folds,
            "model": {"channels": list(self.channels), "latent_channels": self.latent_channels, "lr": self.lr},
            "data": {"batch_size": self.batch_size, "noise_std": self.noise_std, "noise_factor": self.noise_factor},
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "max_minutes": self.max_minutes,
        }


def study_sizes(n_subjects: int) -> dict[str, int]:
    """Subjects per group of a study cohort of ``n_subjects``: 20 % AD, 20 % tumour, the rest healthy.

    >>> study_sizes(60)
    {'n_healthy': 36, 'n_mci': 0, 'n_ad': 12, 'n_tumour': 12}
    >>> study_sizes(7)
    {'n_healthy': 5, 'n_mci': 0, 'n_ad': 1, 'n_tumour': 1}
    """
    n_ad = max(1, int(round(AD_SHARE * n_subjects)))
    n_tumour = max(1, int(round(TUMOUR_SHARE * n_subjects)))
    n_healthy = n_subjects - n_ad - n_tumour
    if n_healthy < MIN_HEALTHY:
        raise ValueError(f"a preprocessing-cost study needs at least {MIN_HEALTHY + 2} subjects "
                         f"({MIN_HEALTHY} healthy, 1 AD, 1 tumour), got {n_subjects}")
    return {"n_healthy": n_healthy, "n_mci": 0, "n_ad": n_ad, "n_tumour": n_tumour}


def _label(profile: str, seed: int, n: int, where: str) -> str:
    return (f"synthetic cohort ({profile} profile, cohort_seed {seed}, preprocessing-cost study of {n} "
            f"subjects, {where})")


def ensure_study_cohorts(
    data_dir: str | os.PathLike,
    profile: str,
    seed: int,
    n_subjects: int,
    resolution: float,
    jobs: int = 1,
    progress: bool = True,
):
    """The study's subjects in MNI space and as native whole-head scans (generated once, then reused).

    Both cohorts are made by :func:`nbutils.synth.ensure_cohort` with the same
    sizes and seed, so subject ``sub-XXXX`` is the same person in both (same
    anatomy, diagnosis, age, sex, site, lesion); only the output space differs.
    They live in ``<data_dir>/synthetic/<profile>-cost-mni`` and ``-cost-native``.

    Returns
    -------
    (RunDataset, RunDataset)
        The MNI-space cohort and the native cohort.
    """
    from nbutils.datasets import load_bids
    from nbutils.runs import RunDataset
    from nbutils.synth import ensure_cohort

    sizes = study_sizes(n_subjects)
    base = Path(data_dir) / "synthetic"
    out = []
    for space, where in (("mni", f"MNI space, {resolution:g} mm grid"), ("native", "native whole-head scans")):
        root = ensure_cohort(base / f"{profile}-cost-{space}", space=space, seed=seed, jobs=jobs,
                             resolution=resolution, progress=progress, **sizes)
        out.append(RunDataset(root, load_bids(root), _label(profile, seed, n_subjects, where), resolution))
    return tuple(out)


def paired_split(
    ideal: pd.DataFrame, prep: pd.DataFrame, test_fraction: float, n_folds: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same test subjects and cross-fitting folds for both versions, by participant.

    Subjects missing from either table (a scan that failed preprocessing) are
    left out of both, so the two models see the same people. The split is drawn
    once (:func:`~nbutils.normative.data.assign_splits`, then
    :func:`~nbutils.normative.data.assign_folds`) and copied to the other table.

    Returns
    -------
    (DataFrame, DataFrame)
        Both tables, rows in the same participant order, with ``split`` and ``fold``.
    """
    from nbutils.normative.data import assign_folds, assign_splits

    for name, t in (("ideal", ideal), ("prep", prep)):
        if t["participant_id"].duplicated().any():
            raise ValueError(f"{name} table has several scans per participant; the study pairs one scan each")
    common = sorted(set(ideal["participant_id"]) & set(prep["participant_id"]))
    if not common:
        raise ValueError("the two versions share no participant")

    def keep(t: pd.DataFrame) -> pd.DataFrame:
        return t.set_index("participant_id").loc[common].reset_index()

    ideal, prep = keep(ideal), keep(prep)
    split = assign_folds(assign_splits(ideal, 0.0, test_fraction, seed=seed), n_folds, seed=seed)
    columns = split[["participant_id", "split", "fold"]]
    prep = prep.drop(columns=[c for c in ("split", "fold") if c in prep]).merge(columns, on="participant_id")
    return split, prep


def train_version(
    table: pd.DataFrame,
    out_dir: str | os.PathLike,
    recipe: NormativeRecipe,
    *,
    seed: int,
    resolution: float,
    data_source: str,
    progress: bool = False,
) -> tuple[Any, Any, dict, bool]:
    """Train (or reload) the normative ensemble of one version with :func:`build_normative_model`.

    Parameters
    ----------
    table : DataFrame
        Subjects with ``split`` and ``fold`` (:func:`paired_split`).
    out_dir : path
        Model folder; a model built there from the same scans, recipe and seed is reused
        (``build_normative_model(..., reuse=True)``).
    recipe : NormativeRecipe
    seed : int
    resolution : float
        mm of the model grid (atlas of the regional reference).
    data_source : str
        Recorded with the statistics.
    progress : bool

    Returns
    -------
    (model, stats, training, reused)
        The ensemble, its :class:`~nbutils.normative.stats.NormativeStats`, its
        ``training.json`` and whether it was loaded from an earlier run.
    """
    from nbutils.normative.pipeline import build_normative_model

    result, stats, model = build_normative_model(
        table, out_dir, seed=seed, stats_options={"resolution": resolution}, data_source=data_source,
        progress=progress, reuse=True, **recipe.build_options(),
    )  # fmt: skip
    return model, stats, json.loads((Path(out_dir) / "training.json").read_text()), result.reused


def evaluate_version(
    model,
    stats,
    table: pd.DataFrame,
    truth: np.ndarray,
    top_k: int = 5,
) -> dict[str, float]:
    """Calibration, AD localisation and tumour detection of one version on its held-out test subjects.

    Reuses the evaluation of notebooks 03 and 04 (:mod:`nbutils.normative.evaluate`).

    Parameters
    ----------
    model, stats
        The version's ensemble and normative statistics.
    table : DataFrame
        The version's subjects with ``split`` (:func:`paired_split`); the test
        rows (``split == "test"``) are evaluated, in table order.
    truth : bool array ``(T, X, Y, Z)``
        Lesion masks on the model grid of the test subjects with a tumour
        diagnosis, in table order (the MNI-space masks for both versions).
    top_k : int
        Regions that count for the AD hit rate.

    Returns
    -------
    dict
        ``n_test_healthy``, ``n_test_ad``, ``n_test_tumour``,
        ``healthy_share_abs_z_gt_1_96`` (target 0.05), ``ad_hit_rate`` and
        ``ad_hit_chance`` (an AD target region in the top ``top_k``),
        ``tumour_auprc_<method>`` and ``tumour_auprc_chance``,
        ``tumour_dice_fpr5``, ``lesion_detection_rate_fpr5`` and
        ``fp_clusters_per_healthy_scan_fpr5`` (autoencoder, healthy 5 % voxel FPR).
    """
    from nbutils.anatomy import ad_target_regions
    from nbutils.normative.data import load_volumes
    from nbutils.normative.deviation import frac_abs_z_above
    from nbutils.normative.evaluate import (
        METHODS,
        ad_localisation,
        detection_by_class,
        false_positive_clusters,
        healthy_thresholds,
        lesion_wise,
        method_scores,
    )
    from nbutils.normative.pipeline import (
        atlas_arrays,
        covariates_of,
        deviation_maps,
        regional_profiles,
    )
    from nbutils.synth.tumours import TUMOUR_CLASSES

    test = table[table["split"] == "test"].reset_index(drop=True)
    dx = test["diagnosis"].to_numpy()
    cn, ad, tumour = dx == "CN", dx == "AD", np.isin(dx, TUMOUR_CLASSES)
    if not (cn.any() and ad.any() and tumour.any()):
        raise ValueError(f"the test subjects need healthy, AD and tumour scans; have {test['diagnosis'].value_counts().to_dict()}")
    truth = np.asarray(truth) > 0
    if len(truth) != tumour.sum():
        raise ValueError(f"{len(truth)} lesion masks for {int(tumour.sum())} tumour test subjects")
    volumes = load_volumes(test["path"])
    cov = covariates_of(test)
    mask = stats.mask

    def rows(sel: np.ndarray) -> pd.DataFrame | None:
        return None if cov is None else cov[sel].reset_index(drop=True)

    _, z = deviation_maps(model, stats, volumes[cn | ad], rows(cn | ad))
    in_z = np.flatnonzero(cn | ad)
    z_cn, z_ad = z[np.isin(in_z, np.flatnonzero(cn))], z[np.isin(in_z, np.flatnonzero(ad))]
    labels, _ = atlas_arrays(stats.atlas, stats.resolution)
    profiles, _ = regional_profiles(stats, z_ad, labels, rows(ad))
    hits, _ = ad_localisation(profiles, ad_target_regions(list(profiles.columns)), top_k)

    thresholds = healthy_thresholds(stats, FPR)
    min_size = stats.postprocessing["min_size"]
    scores = method_scores(model, stats, volumes[tumour], rows(tumour))
    by_class = detection_by_class(scores, {FPR: thresholds}, truth, dx[tumour], mask, min_size)
    pooled = by_class[by_class["class"] == "all"].set_index("method")
    lesions = lesion_wise(scores, thresholds, truth, mask, float(stats.resolution) ** 3, min_size,
                          subjects=test.loc[tumour, "participant_id"].tolist())
    healthy = method_scores(model, stats, volumes[cn], rows(cn))
    fp = false_positive_clusters(healthy, thresholds, mask, min_size)
    return {
        "n_test_healthy": int(cn.sum()),
        "n_test_ad": int(ad.sum()),
        "n_test_tumour": int(tumour.sum()),
        "healthy_share_abs_z_gt_1_96": float(frac_abs_z_above(z_cn, mask).mean()),
        "ad_hit_rate": float(hits["hit_rate"]),
        "ad_hit_chance": float(hits["chance"]),
        **{f"tumour_auprc_{m}": float(pooled.loc[m, "auprc"]) for m in METHODS},
        "tumour_auprc_chance": float(pooled.loc["autoencoder", "auprc_chance"]),
        "tumour_dice_fpr5": float(pooled.loc["autoencoder", "dice_at_fpr"]),
        "lesion_detection_rate_fpr5": float(lesions.loc[lesions["method"] == "autoencoder", "detected"].mean()),
        "fp_clusters_per_healthy_scan_fpr5": float(fp.loc[fp["method"] == "autoencoder", "components"].mean()),
    }


#: Rows of the side-by-side table: metric key -> (label, what to read it against).
ROWS = {
    "healthy_share_abs_z_gt_1_96": ("healthy test voxels with |z| > 1.96", "target 0.05"),
    "ad_hit_rate": ("AD: a target region in the top {k} (hit rate)", "chance {ad_hit_chance:.2f}"),
    "tumour_auprc_autoencoder": ("tumour voxel AUPRC, autoencoder", "chance {tumour_auprc_chance:.3f}"),
    "tumour_auprc_voxel_z": ("tumour voxel AUPRC, voxel-z baseline (no network)", "chance {tumour_auprc_chance:.3f}"),
    "tumour_auprc_intensity": ("tumour voxel AUPRC, intensity baseline (no model)", "chance {tumour_auprc_chance:.3f}"),
    "tumour_dice_fpr5": ("tumour Dice at the healthy 5 % FPR threshold, autoencoder", "higher is better"),
    "lesion_detection_rate_fpr5": ("lesions detected at 5 % FPR, autoencoder", "higher is better"),
    "fp_clusters_per_healthy_scan_fpr5": ("false-positive clusters per healthy test scan at 5 % FPR",
                                          "lower is better"),
}


def cost_table(ideal: Mapping[str, float], prep: Mapping[str, float], top_k: int = 5) -> pd.DataFrame:
    """The side-by-side table: metric | MNI-space ideal | native -> prep | difference (prep - ideal).

    ``ideal`` and ``prep`` are :func:`evaluate_version` results on the same
    test subjects. The ``read against`` column gives each metric's target or
    chance level (of the ideal version; the lesion truth is the same for both).
    """
    out = []
    for key, (label, against) in ROWS.items():
        out.append({
            "metric": label.format(k=top_k), "read against": against.format(**ideal),
            VERSIONS["ideal"]: float(ideal[key]), VERSIONS["prep"]: float(prep[key]),
            "difference": float(prep[key]) - float(ideal[key]),
        })  # fmt: skip
    return pd.DataFrame(out).set_index("metric")


@dataclass(frozen=True)
class CostStudy:
    """Everything :func:`run_cost_study` measured.

    Attributes
    ----------
    table : DataFrame
        :func:`cost_table`.
    results : dict
        Version (``ideal``, ``prep``) -> :func:`evaluate_version` metrics.
    training : dict
        Version -> epochs per member, ``stopped_by``, mean held-out-fold L1, seconds, reused.
    tables : dict
        Version -> its subject table (``path`` = that version's image), paired by
        participant, with ``split`` and ``fold``.
    prep_accuracy : dict
        :func:`nbutils.prep.evaluate.accuracy_summary` of the study's native scans.
    n_prep_failed : int
        Scans that did not finish preprocessing (left out of both versions).
    sources : dict
        Version -> data source sentence.
    """

    table: pd.DataFrame
    results: dict[str, dict[str, float]]
    training: dict[str, dict]
    tables: dict[str, pd.DataFrame]
    prep_accuracy: dict[str, float]
    n_prep_failed: int
    sources: dict[str, str]

    @property
    def subjects(self) -> pd.DataFrame:
        """The paired subjects: ``participant_id``, ``diagnosis``, ``age``, ``sex``, ``site``, ``split``, ``fold``."""
        return self.tables["ideal"][["participant_id", "diagnosis", "age", "sex", "site", "split", "fold"]]

    def split_counts(self) -> pd.DataFrame:
        """Subjects per diagnosis (rows) in the healthy reference and the test set (columns)."""
        s = self.subjects
        return pd.crosstab(s["diagnosis"], s["split"].where(s["split"] == "test", "reference"))

    def metrics(self) -> dict[str, Any]:
        """JSON-ready summary for a notebook's metrics file."""
        return {
            "data_source": self.sources,
            "n_subjects": int(len(self.subjects)),
            "n_prep_failed": int(self.n_prep_failed),
            "split": {k: {d: int(n) for d, n in v.items()} for k, v in self.split_counts().to_dict().items()},
            "table": [{"metric": m, **r} for m, r in self.table.to_dict(orient="index").items()],
            "results": self.results,
            "training": self.training,
            "prep_accuracy": self.prep_accuracy,
        }


def run_cost_study(
    data_dir: str | os.PathLike,
    profile: str,
    *,
    n_subjects: int,
    cohort_seed: int = 0,
    seed: int = 0,
    resolution: float = 2.0,
    prep_config=None,
    recipe: NormativeRecipe | None = None,
    top_k: int = 5,
    jobs: int = 1,
    progress: bool = True,
) -> CostStudy:
    """The whole study: cohorts, preprocessing, two models, one evaluation each, the table.

    Parameters
    ----------
    data_dir, profile : path, str
        Cohorts go to ``<data_dir>/synthetic/<profile>-cost-{mni,native}``,
        the preprocessed scans to ``<native cohort>/derivatives/nbutils-prep``,
        models to ``<data_dir>/models/<profile>/prep_cost/{ideal,prep}``; all reused on a re-run.
    n_subjects : int
        Study size (:func:`study_sizes`).
    cohort_seed, seed : int
        Generator seed; seed of the split and the training.
    resolution : float
        mm of the analysis grid (the MNI cohort's grid and the prep output grid).
    prep_config : PrepConfig, optional
        Preprocessing parameters (``resolution`` and ``seed`` are set from the arguments).
    recipe : NormativeRecipe, optional
    top_k : int
    jobs : int
        Worker processes for generation and preprocessing.
    progress : bool
    """
    from dataclasses import replace

    from nbutils.prep.evaluate import accuracy_summary, evaluate_against_truth
    from nbutils.prep.pipeline import PrepConfig, run_prep
    from nbutils.runs import open_prep_dataset
    from nbutils.synth.tumours import TUMOUR_CLASSES

    recipe = recipe or NormativeRecipe()
    config = replace(prep_config or PrepConfig(), resolution=float(resolution), seed=int(seed))
    mni, native = ensure_study_cohorts(data_dir, profile, cohort_seed, n_subjects, resolution, jobs, progress)
    prep_dir = native.root / "derivatives" / "nbutils-prep"
    prep = run_prep(native.table, prep_dir, config, jobs=jobs, progress=progress)
    accuracy = accuracy_summary(prep, evaluate_against_truth(prep, native.root))
    with warnings.catch_warnings():  # failed scans are counted and reported below
        warnings.simplefilter("ignore", UserWarning)
        prepped = open_prep_dataset(prep_dir)
    ideal_table, prep_table = paired_split(mni.table, prepped.table, recipe.test_fraction, recipe.n_folds, seed)
    sources = {"ideal": mni.source,
               "prep": f"{native.source} -> nbutils prep ({config.reg}, {config.intensity}, {resolution:g} mm grid)"}
    test = ideal_table[ideal_table["split"] == "test"]
    lesion_ids = test.loc[test["diagnosis"].isin(TUMOUR_CLASSES), "participant_id"].tolist()
    truth, _ = mni.lesion_masks(lesion_ids)  # MNI-space truth for both versions
    models = Path(data_dir) / "models" / profile / "prep_cost"
    results, training = {}, {}
    for version, table in (("ideal", ideal_table), ("prep", prep_table)):
        model, stats, train, reused = train_version(
            table, models / version, recipe, seed=seed, resolution=resolution, data_source=sources[version],
            progress=progress)  # fmt: skip
        results[version] = evaluate_version(model, stats, table, truth, top_k)
        training[version] = {"epochs": train["epochs"], "stopped_by": train["stopped_by"],
                             "best_val_loss": train["best_val_loss"], "train_seconds": train["train_seconds"],
                             "reused": reused}  # fmt: skip
    return CostStudy(cost_table(results["ideal"], results["prep"], top_k), results, training,
                     {"ideal": ideal_table, "prep": prep_table}, accuracy, int((prep["status"] != "done").sum()),
                     sources)


def plot_cost(study: CostStudy, title: str = ""):
    """One small panel per metric of the table: the ideal and the preprocessed version side by side.

    Each panel has its own scale; a dashed line marks the target or chance level where there is one.
    """
    import matplotlib.pyplot as plt

    table = study.table
    ncols = 4
    nrows = int(np.ceil(len(table) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.5 * nrows), squeeze=False)
    refs = {"healthy_share_abs_z_gt_1_96": 0.05, "ad_hit_rate": study.results["ideal"]["ad_hit_chance"],
            **{k: study.results["ideal"]["tumour_auprc_chance"] for k in ROWS if k.startswith("tumour_auprc")}}
    for ax, key, (metric, row) in zip(axes.ravel(), ROWS, table.iterrows(), strict=False):
        values = [row[VERSIONS["ideal"]], row[VERSIONS["prep"]]]
        ax.bar([0, 1], values, color=["C0", "C1"], width=0.6)
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        if key in refs:
            ax.axhline(refs[key], color="k", ls="--", lw=0.8)
        ax.set_xticks([0, 1], ["ideal", "prep"], fontsize=8)
        ax.set_ylim(0, max(max(values), refs.get(key, 0)) * 1.25 or 1)
        ax.set_title("\n".join(_wrap(metric, 34)), fontsize=7.5)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(table):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def plot_pair(study: CostStudy, participant_id: str, title: str = ""):
    """The same subject in both versions (axial slice through its lesion or the grid centre).

    The MNI-space lesion truth is outlined in red on both: where the
    preprocessed image's lesion sits off the outline, registration moved it.
    """
    import matplotlib.pyplot as plt

    from nbutils.normative.data import load_volume
    from nbutils.synth.cohort import subject_paths

    images = {v: load_volume(t.set_index("participant_id").loc[participant_id, "path"])
              for v, t in study.tables.items()}
    root = Path(study.tables["ideal"].set_index("participant_id").loc[participant_id, "path"]).parents[2]
    truth_path = subject_paths(root, participant_id)["tumour"]
    truth = load_volume(truth_path) > 0 if truth_path.is_file() else np.zeros_like(images["ideal"], bool)
    k = int(np.argmax(truth.sum(axis=(0, 1)))) if truth.any() else images["ideal"].shape[2] // 2
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4))
    for ax, (version, img) in zip(axes, images.items(), strict=True):
        ax.imshow(img[:, :, k].T, origin="lower", cmap="gray", vmin=-2.5, vmax=2.5)
        if truth.any():
            ax.contour(truth[:, :, k].T, [0.5], colors="r", linewidths=0.8)
        ax.set_title(f"{VERSIONS[version]}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
