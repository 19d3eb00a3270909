"""The batch pipeline: dataset table in, BIDS derivatives and ``prep.tsv`` out.

For every scan of a table from :mod:`nbutils.datasets`, :func:`run_prep`
writes under ``<out>/sub-X/[ses-Y/]anat/``::

    <scan>_space-MNI152_res-2_desc-preproc_T1w.nii.gz   standardised T1 on the analysis grid
    <scan>_space-MNI152_res-2_desc-brain_mask.nii.gz    brain mask on the analysis grid
    <scan>_desc-brain_mask.nii.gz                       brain mask in native (RAS) space
    <scan>_from-T1w_to-MNI152_mode-image_xfm.mat        ANTs affine (+ _xfm.nii.gz warps for SyN)
    <scan>_desc-qc.png                                  QC mosaic
    <scan>_desc-preproc_T1w.json                        parameters, hash, timings, QC metrics

and one row per scan in ``<out>/prep.tsv`` (status, error, seconds per step,
QC metrics). A scan whose sidecar has the same parameter hash is skipped; a
failing scan is recorded with its error and the batch goes on; a scan the
input QC (:mod:`nbutils.prep.qc`) says no to is ``rejected`` with the reason,
a doubtful one keeps ``done`` with a warning. The scans run in this process,
a process pool or on a Dask cluster (:mod:`nbutils.parallel`), with the same
outputs. Raw inputs are only read; every output is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from nbutils import anatomy
from nbutils.io import atomic_path, save_nifti, write_json, write_table
from nbutils.parallel import in_worker_process, limit_threads, open_executor, run_tasks
from nbutils.prep import qc, steps

__all__ = [
    "PIPELINE_VERSION",
    "PrepConfig",
    "output_paths",
    "preprocess_image",
    "process_scan",
    "run_prep",
]

#: Bumped when the pipeline's outputs change for identical parameters (invalidates the hash).
PIPELINE_VERSION = 1
STEP_NAMES = ("load", "reorient", "n4", "brain", "register", "intensity", "resample")
#: Plausible brain (intracranial) volume range; a deepbet mask outside it triggers the fallback.
BRAIN_VOLUME_CM3 = (700.0, 2500.0)


@dataclass(frozen=True)
class PrepConfig:
    """Parameters of the pipeline (all recorded in each scan's sidecar and hash).

    Attributes
    ----------
    reg : {"affine", "syn"}
        Registration to MNI.
    brain : {"deepbet", "registration"}
        Brain extraction; ``"deepbet"`` falls back to ``"registration"`` when
        the CNN fails or gives an implausible volume.
    intensity : {"zscore", "whitestripe", "histogram"}
    resolution : float
        Voxel size (mm) of the output analysis grid.
    template_resolution : float
        Voxel size (mm) of the template grid used for registration.
    n4_shrink : float
        N4 fitting grid = this times the finest voxel size.
    n4_iterations : tuple of int
    bet_threshold : float
    seed : int
        Seed of the registration's metric sampling.
    """

    reg: str = "affine"
    brain: str = "deepbet"
    intensity: str = "zscore"
    resolution: float = 2.0
    template_resolution: float = 2.0
    n4_shrink: float = 4.0
    n4_iterations: tuple[int, ...] = (20, 20, 10)
    bet_threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"reg": ("affine", "syn"), "brain": ("deepbet", "registration"),
                   "intensity": ("zscore", "whitestripe", "histogram")}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.resolution <= 0 or self.template_resolution <= 0 or self.n4_shrink < 1:
            raise ValueError("resolution and template_resolution must be > 0 and n4_shrink >= 1")
        object.__setattr__(self, "n4_iterations", tuple(int(i) for i in self.n4_iterations))

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "n4_iterations": list(self.n4_iterations),
            "pipeline_version": PIPELINE_VERSION,
        }


def _input_hash(path: str | os.PathLike, config: PrepConfig) -> str:
    st = Path(path).stat()
    key = json.dumps({"config": config.as_dict(), "input": [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]},
                     sort_keys=True)  # fmt: skip
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def output_paths(out: str | os.PathLike, scan_id: str, participant_id: str, session: object,
                 resolution: float = 2.0) -> dict[str, Path]:  # fmt: skip
    """Derivative paths of one scan under the pipeline's output folder ``out``."""
    folder = Path(out) / participant_id
    if isinstance(session, str) and session:
        folder = folder / session
    folder = folder / "anat"
    res = f"{resolution:g}".replace(".", "p")
    mni = f"{scan_id}_space-MNI152_res-{res}"
    return {
        "preproc": folder / f"{mni}_desc-preproc_T1w.nii.gz",
        "mask": folder / f"{mni}_desc-brain_mask.nii.gz",
        "native_mask": folder / f"{scan_id}_desc-brain_mask.nii.gz",
        "xfm": folder / f"{scan_id}_from-T1w_to-MNI152_mode-image_xfm.mat",
        "warp": folder / f"{scan_id}_from-T1w_to-MNI152_mode-image_xfm.nii.gz",
        "inverse_warp": folder / f"{scan_id}_from-MNI152_to-T1w_mode-image_xfm.nii.gz",
        "qc": folder / f"{scan_id}_desc-qc.png",
        "sidecar": folder / f"{scan_id}_desc-preproc_T1w.json",
    }


# --------------------------------------------------------------------------- one image
def preprocess_image(
    img: nib.Nifti1Image,
    config: PrepConfig,
    workdir: str | os.PathLike,
    cpu_seconds: dict[str, float] | None = None,
) -> tuple[dict[str, object], dict[str, float], dict[str, object]]:
    """Run steps 2-7 on a validated image.

    ``cpu_seconds``, when given, is filled with the CPU time of this process
    (all threads, ANTs/ITK and torch included) per step: on a shared machine
    it is a steadier measure of cost than wall time.

    Returns
    -------
    images : dict
        ``preproc``, ``mask`` (MNI grid), ``native_mask``, ``ras`` (reoriented
        input), ``registration`` (:class:`~nbutils.prep.steps.Registration`).
    seconds : dict
        Wall time per step.
    metrics : dict
        ``mask_method``, ``brain_volume_cm3``, ``template_corr``, ``mask_template_dice``.
    """
    seconds: dict[str, float] = {}
    metrics: dict[str, object] = {}
    timed = _step_timer(seconds, {} if cpu_seconds is None else cpu_seconds)

    ras = timed("reorient", steps.reorient_to_ras, img)
    n4, _ = timed(
        "n4", steps.correct_bias, ras, shrink=config.n4_shrink, iterations=config.n4_iterations
    )
    voxel_cm3 = float(np.prod(ras.header.get_zooms()[:3])) / 1000.0
    mask, method = None, config.brain
    if config.brain == "deepbet":
        mask = _deepbet_mask(timed, n4, config, voxel_cm3, metrics)
        if mask is None:
            method = "registration (fallback)"
    registration = timed(
        "register", steps.register_to_template, n4, mask, kind=config.reg,
        template_resolution=config.template_resolution, seed=config.seed, workdir=workdir,
    )  # fmt: skip
    if mask is None:
        mask = timed("brain", steps.template_brain_mask, n4, registration)
    preproc, mni_mask = _standardise_and_resample(timed, n4, mask, registration, config)
    m = np.asarray(mni_mask.dataobj) > 0
    t = np.asarray(anatomy.load_brain_mask(anatomy.standard_grid(config.resolution)).dataobj) > 0
    metrics.update(
        mask_method=method,
        brain_volume_cm3=float(np.count_nonzero(np.asarray(mask.dataobj))) * voxel_cm3,
        template_corr=registration.correlation,
        mask_template_dice=float(2 * (m & t).sum() / max(m.sum() + t.sum(), 1)),
    )
    images = {
        "preproc": preproc,
        "mask": mni_mask,
        "native_mask": mask,
        "ras": ras,
        "registration": registration,
    }
    return images, seconds, metrics


def _step_timer(seconds: dict[str, float], cpu: dict[str, float]) -> Callable:
    """``timed(name, fn, *args, **kwargs)``: call ``fn`` adding its wall and CPU time under ``name``."""

    def timed(name: str, fn: Callable, *args, **kwargs):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - cpu_start
        return result

    return timed


def _deepbet_mask(
    timed: Callable, n4: nib.Nifti1Image, config: PrepConfig, voxel_cm3: float, metrics: dict
) -> nib.Nifti1Image | None:
    """deepbet brain mask, or ``None`` (reason in ``metrics["fallback_reason"]``) when it fails
    or its brain volume is implausible."""
    try:
        mask = timed("brain", steps.extract_brain, n4, threshold=config.bet_threshold)
        volume = float(np.count_nonzero(np.asarray(mask.dataobj))) * voxel_cm3
        if not BRAIN_VOLUME_CM3[0] <= volume <= BRAIN_VOLUME_CM3[1]:
            metrics["fallback_reason"] = (
                f"deepbet brain volume {volume:.0f} cm3 outside {BRAIN_VOLUME_CM3}"
            )
            return None
    except Exception as err:  # CNN failure -> registration-based mask
        metrics["fallback_reason"] = f"deepbet failed: {type(err).__name__}: {err}"
        return None
    return mask


def _standardise_and_resample(
    timed: Callable, n4: nib.Nifti1Image, mask: nib.Nifti1Image, registration, config: PrepConfig
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Standardised intensities and brain mask on the MNI grid, zero outside the resampled mask."""
    z = timed("intensity", steps.standardise_intensity, n4, mask, config.intensity)
    preproc = timed("resample", steps.resample_to_standard, z, registration, config.resolution)
    mni_mask = timed(
        "resample", steps.resample_to_standard, mask, registration, config.resolution, "nearest"
    )
    m = np.asarray(mni_mask.dataobj) > 0
    pre = np.asarray(preproc.dataobj)
    pre[~m] = 0.0
    return nib.Nifti1Image(pre, preproc.affine), mni_mask


def save_qc_png(preproc: nib.Nifti1Image, mask: nib.Nifti1Image, path: Path, title: str) -> Path:
    """Three orthogonal slices of the preprocessed scan, the template brain outline in red."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grid_mask = np.asarray(
        anatomy.load_brain_mask(anatomy.standard_grid(float(preproc.header.get_zooms()[0]))).dataobj
    )
    data = np.asarray(preproc.dataobj)
    mid = [s // 2 for s in data.shape]
    # matplotlib's default style, whatever the calling process set: the same scan gives the same
    # figure inline, in a process pool and on a Dask worker
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        for k, ax in enumerate(axes):
            ax.imshow(np.take(data, mid[k], axis=k).T, origin="lower", cmap="gray", vmin=-2.5, vmax=2.5)
            ax.contour(np.take(grid_mask, mid[k], axis=k).T, [0.5], colors="r", linewidths=0.6)
            ax.axis("off")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=70, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- one scan
def process_scan(row: dict, out: str | os.PathLike, config: PrepConfig) -> dict:
    """Pre-process one table row; never raises (errors are recorded in the result).

    Returns
    -------
    dict
        The ``prep.tsv`` row: ids, ``status`` (``done``/``failed``, or
        ``rejected`` without processing when the voxels are coarser than
        :data:`nbutils.prep.qc.VOXEL_FAIL_MM`), ``error``, ``reused``,
        ``seconds_<step>``, QC measurements (``voxel_max_mm``,
        ``fov_contact``, ``template_corr`` ...), output paths. The QC
        decisions are taken over the batch by :func:`nbutils.prep.qc.assess`.
    """
    paths = output_paths(
        out, row["scan_id"], row["participant_id"], row.get("session"), config.resolution
    )
    result = {k: row.get(k) for k in ("participant_id", "session", "scan_id", "path", "dataset")}
    result.update(status="failed", error="", reused=False)
    try:
        digest = _input_hash(row["path"], config)
    except OSError as err:
        result["error"] = f"{row['path']}: cannot read ({type(err).__name__}: {err})"
        return result
    sidecar = paths["sidecar"]
    if sidecar.is_file():
        try:
            previous = json.loads(sidecar.read_text())
            if previous.get("hash") == digest and all(
                paths[k].is_file() for k in ("preproc", "mask", "xfm")
            ):
                result.update(previous["row"], reused=True)
                return _backfill_qc(result)
        except (json.JSONDecodeError, KeyError):
            pass
    start = time.perf_counter()
    try:
        with steps.private_tmpdir() as tmp:
            t0 = time.perf_counter()
            img = steps.load_and_validate(row["path"])
            seconds = {"load": time.perf_counter() - t0}
            result["voxel_max_mm"] = _voxel_max_mm(img)
            if any(level == "fail" for level, _ in qc.scan_flags(result)):
                result.update(status="rejected", seconds_total=round(time.perf_counter() - start, 3))
                return result  # nothing worth 13 s of processing; qc.assess gives the reason
            images, step_seconds, metrics = preprocess_image(img, config, tmp)
            seconds.update(step_seconds)
            metrics["fov_contact"] = _fov_contact(images["native_mask"])
            save_nifti(images["preproc"], paths["preproc"])
            save_nifti(images["mask"], paths["mask"])
            save_nifti(images["native_mask"], paths["native_mask"])
            reg = images["registration"]
            _copy_atomic(reg.forward[-1], paths["xfm"])
            if config.reg == "syn":
                _copy_atomic(reg.forward[0], paths["warp"])
                _copy_atomic(reg.inverse[-1], paths["inverse_warp"])
            save_qc_png(images["preproc"], images["mask"], paths["qc"],
                        f"{row['scan_id']}  r={metrics['template_corr']:.2f}  "
                        f"{metrics['brain_volume_cm3']:.0f} cm3  [{metrics['mask_method']}]")  # fmt: skip
    except Exception as err:
        result["error"] = _message(err, row["path"])
        result["seconds_total"] = time.perf_counter() - start
        return result
    result.update(status="done", **{f"seconds_{k}": round(v, 3) for k, v in seconds.items()})
    result["seconds_total"] = round(time.perf_counter() - start, 3)
    result.update(metrics)
    result.update(
        {f"{k}_path": str(paths[k]) for k in ("preproc", "mask", "native_mask", "xfm", "qc")}
    )
    write_json(sidecar, {"hash": digest, "parameters": config.as_dict(), "source": str(row["path"]), "row": {
        k: v for k, v in result.items() if k not in ("reused",)}})  # fmt: skip
    return result


def _voxel_max_mm(img: nib.spatialimages.SpatialImage) -> float:
    return round(float(max(img.header.get_zooms()[:3])), 4)


def _fov_contact(native_mask: nib.spatialimages.SpatialImage) -> float:
    return round(qc.fov_contact(np.asarray(native_mask.dataobj)), 5)


def _backfill_qc(result: dict) -> dict:
    """A sidecar written before the input QC lacks its measurements: take them from the files."""
    try:
        if "voxel_max_mm" not in result:
            result["voxel_max_mm"] = _voxel_max_mm(nib.load(result["path"]))
        if "fov_contact" not in result and result.get("native_mask_path"):
            result["fov_contact"] = _fov_contact(nib.load(result["native_mask_path"]))
    except Exception:  # unreadable now: the measurement stays missing and is not judged
        pass
    return result


def _message(err: Exception, path: str) -> str:
    text = f"{type(err).__name__}: {err}" if not isinstance(err, steps.PrepError) else str(err)
    if str(path) not in text:
        text = f"{path}: {text}"
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = (
        f" (in {Path(last[0].filename).name}:{last[0].lineno})"
        if last and not isinstance(err, steps.PrepError)
        else ""
    )
    return text.replace("\n", " ") + where


def _copy_atomic(src: str, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


_SCAN_LOCK = threading.Lock()


def _scan_task(row: dict, out: str, config: PrepConfig) -> dict:
    """:func:`process_scan` as a batch task: in a pool or Dask worker process one ITK/torch
    thread, and one scan at a time per process (the steps are not thread-safe: a scan's
    temporary folder, matplotlib)."""
    if in_worker_process():
        limit_threads()
    with _SCAN_LOCK:
        return process_scan(row, out, config)


def _lost_scan(task: tuple, err: BaseException) -> dict:
    """Failure record of a scan whose worker died (crashed process, killed Dask worker)."""
    row = task[0]
    result = {k: row.get(k) for k in ("participant_id", "session", "scan_id", "path", "dataset")}
    return {**result, "status": "failed", "reused": False,
            "error": f"{row['path']}: worker lost ({type(err).__name__}: {err})".replace("\n", " ")}  # fmt: skip


# --------------------------------------------------------------------------- batch
def run_prep(
    table: pd.DataFrame,
    out: str | os.PathLike,
    config: PrepConfig | None = None,
    jobs: int = 1,
    progress: bool = True,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """Pre-process every scan of a dataset table; write ``<out>/prep.tsv``.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`nbutils.datasets.load_bids` / ``load_ixi`` / ``load_brats``.
    out : path-like
        Derivatives folder, e.g. ``<dataset>/derivatives/nbutils-prep``.
    config : PrepConfig, optional
    jobs : int
        Scans processed in parallel (separate processes, one thread each);
        ignored when ``executor`` is given.
    progress : bool
        tqdm progress bar.
    executor : concurrent.futures.Executor, optional
        Where the scans run, from :func:`nbutils.parallel.open_executor` (e.g.
        a Dask cluster); the caller closes it.

    Returns
    -------
    pandas.DataFrame
        The ``prep.tsv`` table, in the order of ``table``, with the input QC
        of :func:`nbutils.prep.qc.assess` (``qc``, ``qc_reasons``; scans
        failing a strict rule have ``status="rejected"``).
    """
    config = config or PrepConfig()
    missing = [c for c in ("participant_id", "session", "scan_id", "path") if c not in table]
    if missing:
        raise ValueError(f"dataset table lacks column(s) {missing}")
    out = Path(out)
    rows = [r._asdict() if hasattr(r, "_asdict") else dict(r) for _, r in table.iterrows()]
    tasks = [(row, str(out), config) for row in rows]
    kw = {"progress": progress, "desc": "prep", "unit": "scan", "on_error": _lost_scan}
    with nullcontext(executor) if executor is not None else open_executor(jobs=jobs) as pool:
        results = run_tasks(_scan_task, tasks, pool, **kw)
    prep = qc.assess(pd.DataFrame(results))
    write_table(out / "prep.tsv", prep)
    write_json(out / "dataset_description.json", {
        "Name": "nbutils-prep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "nbutils.prep", "Version": str(PIPELINE_VERSION)}],
    })  # fmt: skip
    return prep
