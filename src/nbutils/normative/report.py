"""Single-subject deviation report (NeuroQuant-style) and the ``nbutils report`` command.

One preprocessed T1 scan + one checkpoint (with its normative statistics
beside it) -> a standalone HTML page: deviation overlays in three planes,
the regional profile against healthy normative ranges, the region table,
the total deviation, and where the data and the model came from. The z-map
(NIfTI) and the profile (TSV) are written beside the page.

Example::

    nbutils report --subject sub-0042 --bids data/synthetic/quick-mni \\
        --model data/models/quick/normative_ae/checkpoints/best.ckpt --out reports/subjects
    nbutils report --subject sub-IXI002 --prep /data/ixi-prep \\
        --model data/models/real/normative_ae/checkpoints/best.ckpt --out reports/subjects

The scan guard saved beside the checkpoint (:mod:`nbutils.normative.guard`)
puts a red warning at the top of the page when the scan is unlike the
model's healthy reference, and says so when the model has no guard.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

__all__ = ["register", "run", "write_report"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def _kv(rows: dict) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items()
    )
    return f'<table class="kv">{cells}</table>'


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
.kv th{color:#555;font-weight:600}.flag{color:#b00;font-weight:600}
.box{display:inline-block;padding:.6em 1em;border-radius:6px;background:#f3f3f3;margin:.3em .6em .3em 0}
.note{font-size:12px;color:#666}img{max-width:100%}
"""


def write_report(
    subject: str,
    volume_path: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    data_source: str,
    fpr: float = 0.05,
    top: int = 20,
    extra: dict | None = None,
    covariates: dict | None = None,
) -> Path:
    """Analyse one preprocessed scan and write ``<out_dir>/<subject>_deviation_report.html``.

    Parameters
    ----------
    subject : str
        Subject label shown in the report and used in file names.
    volume_path : path
        Skull-stripped, intensity-standardised T1 in MNI space (resampled to the
        model grid if its shape differs).
    checkpoint : path
        Model checkpoint; ``normative_stats.npz/json`` must lie beside it.
    out_dir : path
        Output folder (created).
    data_source : str
        Where the scan came from, printed in the report.
    fpr : float
        Healthy voxel false-positive rate of the anomaly threshold (0.01 or 0.05).
    top : int
        Regions shown in the profile chart and table.
    extra : dict, optional
        More subject information (age, sex, diagnosis ...) for the header table.
    covariates : dict, optional
        ``age``, ``sex`` and ``site``: the scan is compared with healthy people
        like them. Taken from ``extra`` when omitted; without them the report says
        that the unconditional reference (all ages) was used.

    Returns
    -------
    Path of the HTML file.
    """
    from nbutils.io import save_nifti, write_table, write_text

    from .pipeline import analyse_volume
    from .stats import load_stats
    from .train import load_autoencoder

    checkpoint, volume_path, out_dir = Path(checkpoint), Path(volume_path), Path(out_dir)
    stats = load_stats(checkpoint)
    model = load_autoencoder(checkpoint)
    volume, grid, note = _scan_on_model_grid(volume_path, stats)
    if covariates is None:
        covariates = {k: (extra or {})[k] for k in ("age", "sex", "site") if k in (extra or {})}
    res = analyse_volume(model, stats, volume, fpr=fpr, covariates=_covariate_frame(covariates))
    guard = _guard(checkpoint, stats, volume, res)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in subject)
    save_nifti(grid.image(res.z), out_dir / f"{safe}_desc-deviation_zmap.nii.gz")
    write_table(out_dir / f"{safe}_regional_profile.tsv", res.profile)

    figures = _figures(subject, volume, res, fpr, top, stats, covariates)
    subject_info = {"subject": subject, "scan": str(volume_path.resolve()),
                    "data source": data_source, **(extra or {}),
                    "compared with": _compared_with(res, covariates)}
    if note:
        subject_info["note"] = note
    page = _page(subject, data_source, stats, res, grid, fpr, top, figures, subject_info,
                 _model_info(checkpoint, stats, res, grid, fpr))  # fmt: skip
    page = page.replace("<h2>Subject and scan</h2>", _guard_html(guard, stats) + "<h2>Subject and scan</h2>", 1)
    return write_text(out_dir / f"{safe}_deviation_report.html", page)


def _guard(checkpoint: Path, stats, volume: np.ndarray, res):
    """The scan guard's verdict (:mod:`nbutils.normative.guard`); unavailable for old model folders."""
    import warnings

    from .guard import check_scan, load_guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the page itself says the guard is missing
        guard = load_guard(checkpoint)
    return check_scan(guard, stats, volume, res.z)


_GUARD_CSS = ("border:3px solid #b00;background:#fff0f0;color:#700;padding:.8em 1em;border-radius:6px;"
              "font-weight:600;margin:1em 0")


def _guard_html(guard, stats) -> str:
    """A prominent banner when the scan is unlike the reference (or nobody could check), else one line."""
    trained = html.escape(str(stats.provenance.get("data_source") or "unknown data"))
    measures = ", ".join(f"{k} {v:.3g}" for k, v in guard.measures.items())
    if guard.warning:
        return (f'<div class="guard-warning" role="alert" style="{_GUARD_CSS}">{html.escape(guard.warning)}'
                f'<br/><span style="font-weight:400">Measures of this scan: {html.escape(measures)}</span></div>')
    return (f'<p class="guard-ok">Scan guard: inside the healthy reference range on every measure '
            f"({html.escape(measures)}); model trained on {trained}.</p>")


def _scan_on_model_grid(volume_path: Path, stats):
    """The scan as float32 on the model's standard grid, the grid, and a note if it was resampled."""
    import nibabel as nib

    from nbutils.anatomy import resample_to_grid, standard_grid

    grid = standard_grid(stats.resolution)
    if not volume_path.exists():
        raise FileNotFoundError(f"scan not found: {volume_path}")
    img = nib.load(volume_path)
    note = ""
    if img.shape[:3] != stats.mask.shape:
        img = resample_to_grid(img, grid)
        note = f"resampled from {nib.load(volume_path).shape[:3]} to the model grid {grid.shape}"
    return np.asarray(img.dataobj, dtype=np.float32), grid, note


def _covariate_frame(covariates: dict | None):
    """One-row DataFrame of ``age``, ``sex``, ``site`` (``None`` when any is missing)."""
    import pandas as pd

    if not covariates or any(covariates.get(k) is None for k in ("age", "sex", "site")):
        return None
    return pd.DataFrame([{"age": float(covariates["age"]), "sex": str(covariates["sex"]),
                          "site": str(covariates["site"])}])  # fmt: skip


def _compared_with(res, covariates: dict | None) -> str:
    if res.conditional:
        return (f"healthy people aged {float(covariates['age']):.0f}, sex {covariates['sex']}, "
                f"site {covariates['site']} (conditional reference)")
    return "all healthy reference subjects, whatever their age, sex and site (no covariates given)"


def _figures(subject: str, volume: np.ndarray, res, fpr: float, top: int, stats=None,
             covariates: dict | None = None) -> dict[str, bytes]:
    """PNGs of the report: z overlay and anomaly map through the peak, regional profile,
    centile charts of the top regions and the ensemble's uncertainty map (when available)."""
    import matplotlib.pyplot as plt

    from .plots import figure_png, plot_centile_chart, plot_planes, plot_profile

    peak = np.unravel_index(int(np.argmax(np.abs(res.z))), res.z.shape)
    planes = figure_png(plot_planes(volume, res.z, peak, threshold=1.96,
                                    title=f"{subject}: voxel z (|z| > 1.96), through the peak"))
    seg_z = np.where(res.segmentation, res.z, 0.0)
    seg_png = figure_png(plot_planes(volume, seg_z, peak, threshold=1e-6,
                                     title=f"anomalous voxels at {fpr:.0%} healthy FPR"))
    prof_png = figure_png(plot_profile(res.profile, top=top,
                                       title="regional deviation vs healthy reference"))
    out = {"planes": planes, "segmentation": seg_png, "profile": prof_png}
    if res.uncertainty is not None:
        out["uncertainty"] = figure_png(plot_planes(volume, res.uncertainty, peak, threshold=1e-6,
                                                    title="ensemble disagreement (SD of members' z)"))
    if stats is not None and stats.regional_model is not None and res.conditional:
        names = res.profile["name"].head(3).tolist()
        fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            score = float(res.profile.set_index("name").loc[name, stats.regional.measure])
            plot_centile_chart(stats.regional_model, name, str(covariates["site"]), ax=ax,
                               subject={"age": float(covariates["age"]), "sex": str(covariates["sex"]),
                                        "score": score, "label": subject})  # fmt: skip
        fig.tight_layout()
        out["centiles"] = figure_png(fig)
    return out


def _model_info(checkpoint: Path, stats, res, grid, fpr: float) -> dict:
    """The model-provenance table: checkpoint, architecture, training, reference, threshold."""
    from nbutils import __version__

    training = stats.provenance.get("training", {})
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint sha256": _sha256(checkpoint)[:16],
        "architecture": f"3D conv autoencoder without skips, channels {training.get('model', {}).get('channels')}, "
        f"latent {training.get('model', {}).get('latent_channels')}",
        "trained on": f"{stats.provenance.get('reference', str(stats.residual.n) + ' healthy subjects')}; "
        f"{training.get('n_folds', 1)} member(s), epochs {training.get('epochs', '?')}, "
        f"mean held-out L1 {training.get('best_val_loss', float('nan')):.4f}",
        "normative reference": f"{stats.residual.n} healthy subjects (out-of-sample residuals); voxel norm "
        f"conditional on {stats.provenance.get('covariate_terms') or 'nothing'}; regional model: "
        f"{stats.provenance.get('regional_model', 'unconditional')}",
        "model data source": stats.provenance.get("data_source", "unknown"),
        "atlas": stats.atlas,
        "grid": f"{grid.shape} at {grid.resolution:g} mm (MNI152)",
        "threshold": f"score > {res.threshold:.2f} = {fpr:.0%} voxel FPR on the healthy reference",
        "post-processing": ", ".join(f"{k}={v}" for k, v in stats.postprocessing.items()),
        "nbutils": __version__,
    }


def _page(subject, data_source, stats, res, grid, fpr, top, figures, subject_info, model_info) -> str:
    """The standalone HTML page."""
    vox_ml = grid.voxel_volume / 1000.0
    n_out = int(res.profile["outside_range"].sum())
    table = res.profile.head(top)[["name", "hemisphere", "n_voxels", "mean_z", "profile", "centile",
                                   "direction"]]
    table_html = table.to_html(index=False, float_format=lambda v: f"{v:.2f}", border=0)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    flag = ' class="flag"' if abs(res.total_deviation) > 1.96 else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/>
<title>Deviation report {html.escape(subject)}</title><style>{_CSS}</style></head><body>
<h1>Normative deviation report: {html.escape(subject)}</h1>
<p class="sub">Data source: <b>{html.escape(data_source)}</b> · generated {when}</p>
<div class="box">Total deviation: <b{flag}>{res.total_deviation:+.2f}</b> (z against healthy; normal range ±1.96)</div>
<div class="box">Regions outside the 95 % range: <b>{n_out}</b> of {len(res.profile)}</div>
<div class="box">Anomalous volume at {fpr:.0%} FPR: <b>{res.segmentation.sum() * vox_ml:.1f} ml</b></div>
<p class="sub">Compared with: <b>{html.escape(subject_info.get("compared with", ""))}</b></p>
<h2>Subject and scan</h2>{_kv(subject_info)}
<h2>Deviation map</h2>
<p>Voxel z-scores of the autoencoder residual against healthy people like the subject
(red: brighter than expected, blue: darker — in T1, darker means tissue replaced by CSF).</p>
{_img(figures["planes"], "deviation overlay in three planes")}
{_img(figures["segmentation"], "thresholded anomaly map in three planes")}
<h2>Regional profile</h2>
<p>Mean voxel z per {html.escape(stats.atlas)} region, z-scored against the same
measure in healthy reference subjects; the shaded band is the healthy 95 % range.</p>
{_img(figures["profile"], "regional profile against normative ranges")}
<h3>Top {top} regions by |deviation|</h3>{table_html}
{_centiles_section(figures)}{_uncertainty_section(figures)}
<h2>Model provenance</h2>{_kv(model_info)}
<p class="note">Research software, not a medical device. Deviations are relative to the
model's healthy reference cohort ({html.escape(str(stats.provenance.get('data_source', 'unknown')))});
they are only as representative as that cohort.</p>
</body></html>
"""


def _centiles_section(figures: dict) -> str:
    if "centiles" not in figures:
        return ""
    return ("<h2>Centile charts</h2><p>Healthy 5/25/50/75/95 % centiles of the region score against "
            "age (women red, men blue) at the subject's site; the dot is the subject.</p>"
            + _img(figures["centiles"], "centile charts of the most deviating regions"))


def _uncertainty_section(figures: dict) -> str:
    if "uncertainty" not in figures:
        return ""
    return ("<h2>Model uncertainty</h2><p>Where the ensemble's members disagree (SD of their z-maps), "
            "deviations are less certain.</p>" + _img(figures["uncertainty"], "ensemble disagreement"))


def _find_scans(args) -> list[tuple[str, Path, str, dict]]:
    """``(subject, scan, data source, extra)`` of every subject the command names."""
    if args.image:
        if args.all or len(args.subject or []) != 1:
            raise SystemExit("nbutils report: --image takes exactly one --subject")
        return [(args.subject[0], Path(args.image), args.data_source or f"file {args.image}", {})]
    if not args.bids and not args.prep:
        raise SystemExit("nbutils report: give --bids DIR or --prep DIR (with --subject or --all), "
                         "or --image PATH")
    if not args.all and not args.subject:
        raise SystemExit("nbutils report: name --subject ... or --all")
    if args.prep:
        from nbutils.runs import open_prep_dataset

        data = open_prep_dataset(args.prep)
        table, default_source = data.table, data.source
    else:
        from nbutils.datasets import load_bids

        table, default_source = load_bids(args.bids), None
    if args.session:
        table = table[table["session"] == args.session]
    wanted = (sorted(table["participant_id"].unique()) if args.all
              else [s if s.startswith("sub-") else f"sub-{s}" for s in args.subject])  # fmt: skip
    out = []
    for sid in wanted:
        rows = table[table["participant_id"] == sid]
        if rows.empty:
            raise SystemExit(f"nbutils report: subject {sid} not found in {args.prep or args.bids}")
        row = rows.iloc[0]
        source = (args.data_source or default_source
                  or f"BIDS dataset '{row['dataset']}' ({Path(args.bids).resolve()})")  # fmt: skip
        extra = {k: row[k] for k in ("age", "sex", "site", "diagnosis") if k in row and row[k] == row[k]}
        for key in ("age", "sex", "site"):
            if getattr(args, key, None) is not None:
                extra[key] = getattr(args, key)
        out.append((sid, Path(row["path"]), source, extra))
    return out


def _report_task(subject, path, model, out, source, fpr, top, extra) -> dict:
    """One subject's report (a batch task: runs inline, in a process pool or on a Dask worker)."""
    report = write_report(subject, path, model, out, source, fpr=fpr, top=top, extra=extra)
    return {"subject": subject, "status": "done", "report": str(report), "error": ""}


def run(args: argparse.Namespace) -> int:
    """Entry point of ``nbutils report``: one subject, or a batch on processes or a Dask cluster."""
    from nbutils.io import write_table
    from nbutils.parallel import executor_from_args, run_tasks

    scans = _find_scans(args)
    if len(scans) == 1 and args.jobs == 1 and not args.scheduler and not args.cluster:
        subject, path, source, extra = scans[0]
        print(write_report(subject, path, args.model, args.out, source, fpr=args.fpr, top=args.top,
                           extra=extra))
        return 0
    tasks = [(s, str(p), args.model, args.out, src, args.fpr, args.top, extra) for s, p, src, extra in scans]

    def failed(task, err):
        return {"subject": task[0], "status": "failed", "report": "", "error": f"{type(err).__name__}: {err}"}

    with executor_from_args(args) as executor:
        rows = run_tasks(_report_task, tasks, executor, desc="reports", unit="subject", on_error=failed)
    import pandas as pd

    table = pd.DataFrame(rows)
    index = write_table(Path(args.out) / "reports.tsv", table)
    bad = table[table["status"] != "done"]
    print(f"{len(table) - len(bad)} of {len(table)} reports written; index {index}")
    for r in bad.itertuples():
        print(f"FAILED {r.subject}: {r.error}", file=sys.stderr)
    return 1 if len(bad) else 0


def register(subparsers) -> None:
    """Add the ``report`` command to an argparse ``subparsers`` object."""
    from nbutils.parallel import add_executor_arguments

    p = subparsers.add_parser(
        "report",
        help="single-subject normative deviation reports (HTML), one or a batch",
        description="Write a standalone HTML deviation report for preprocessed T1 scans: one subject, "
                    "several, or --all of a BIDS folder, inline, in local processes or on a Dask cluster.",
    )
    p.add_argument("--subject", nargs="+", help="subject label(s), e.g. sub-0042")
    p.add_argument("--all", action="store_true", help="every subject of --bids or --prep")
    p.add_argument("--model", required=True, help="model (ensemble.json or checkpoint; normative_stats.* beside it)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--bids", help="BIDS folder holding the subjects' preprocessed MNI T1")
    p.add_argument("--prep", help="folder written by `nbutils prep` (prep.tsv) holding the subjects' scans")
    p.add_argument("--session", help="session label (ses-...) when a subject has several")
    p.add_argument("--image", help="path of the preprocessed T1 instead of --bids")
    p.add_argument("--data-source", help="text describing where the scan came from")
    p.add_argument("--fpr", type=float, default=0.05, choices=[0.01, 0.05],
                   help="healthy voxel false-positive rate of the anomaly threshold")
    p.add_argument("--top", type=int, default=20, help="regions in the profile")
    p.add_argument("--age", type=float, help="age in years (else from participants.tsv)")
    p.add_argument("--sex", help="sex as in the reference, e.g. F or M")
    p.add_argument("--site", help="site / scanner label as in the reference")
    add_executor_arguments(p, unit="subjects")
    p.set_defaults(func=run)
