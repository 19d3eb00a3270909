"""Which training recipe lets the 3D tumour networks of notebook 06 learn? Validation folds only.

Run on demand (not a test, and slow: 2 networks x 3 folds per variant and seed)::

    nice -n 5 .venv/bin/python benchmarks/bench_tumour_settings.py --data /tmp/cls/data \\
        --report benchmarks/results/tumour_settings_<date>.md

Model selection without the test subjects: the task and split are notebook 06's
(quick profile: 40 subjects per class, 4 mm working grid, ``subject_split(test_size=0.2,
n_folds=3, seed=0)``), but only the folds of the training pool are used: each
fold's network trains on the other two folds and is scored on its own
validation subjects (balanced accuracy, chance 0.25). The test subjects are
never loaded into a model. Each variant is notebook 06's settings (the quick
profile's ``classifier`` plus ``tumour_network``) with a few values changed,
run with the notebook's seeds (fold ``i`` trains with ``seed + i``) and
optionally more seeds, since one seed's fold scores move by about 0.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from datetime import date
from types import SimpleNamespace

import pandas as pd

#: The quick profile's classifier settings (notebooks/profiles/quick.yaml) ...
QUICK = {"working_resolution": 4.0, "n_folds": 3, "max_epochs": 20, "patience": 5}
#: ... and notebook 06's tumour-network overrides before and after this study.
BEFORE = {"pooling": "max", "voxel_norm": True, "lr": 0.001, "weight_decay": 0.0}
CONTROLS = {**BEFORE, "voxel_norm_reference": "controls"}
ONECYCLE = {**CONTROLS, "lr": 0.003, "lr_schedule": "onecycle", "patience": 100}
CHOSEN = {**ONECYCLE, "max_epochs": 25, "channels": [8, 16, 32, 64]}
VARIANTS: dict[str, dict] = {
    "before: z against all training subjects, Adam 1e-3": BEFORE,
    "z against the controls only": CONTROLS,
    "controls + one-cycle 3e-3, no early stop": ONECYCLE,
    "+ 8-16-32-64 feature maps, 25 epochs (chosen)": CHOSEN,
    "chosen, validated every 5th epoch": {**CHOSEN, "val_every": 5},
}
CLASSES = ("no_tumour", "glioma", "meningioma", "pituitary")


def quick_params(data_dir: str) -> SimpleNamespace:
    """The parameters of a quick-profile notebook run on ``data_dir`` (what ``open_dataset`` and friends read)."""
    return SimpleNamespace(data_dir=data_dir, profile="quick", cohort_seed=0, seed=0, dataset="")


def quick_tumour_dataset(data_dir: str, n_per_class: int = 40):
    """Notebook 06's quick cohort with its tumour extension (generated once if missing)."""
    from nbutils.runs import extend_dataset, open_dataset

    params = quick_params(data_dir)
    return extend_dataset(params, open_dataset(params), {"CN": n_per_class, **dict.fromkeys(CLASSES[1:], n_per_class)})


def load_quick_task(data_dir: str, n_per_class: int = 40):
    """Notebook 06's quick task (the cohort extension must exist already or is generated once)."""
    from nbutils.classify.volumes import load_task

    tumours = CLASSES[1:]
    data = quick_tumour_dataset(data_dir, n_per_class)
    groups = {"no_tumour": ["CN"], **{t: [t] for t in tumours}}
    return load_task(data.table, groups, working_resolution=QUICK["working_resolution"], resolution=data.resolution,
                     max_per_class=dict.fromkeys(groups, n_per_class), seed=0, progress=False), data.source


def validation_scores(settings, task, split, seed: int, folds=None) -> pd.DataFrame:
    """Validation balanced accuracy of both networks on every fold (the test subjects are not touched)."""
    from nbutils.classify.experiment import fit_options, select
    from nbutils.classify.lightning import fit_classifier, predict_proba
    from nbutils.classify.metrics import classification_metrics
    from nbutils.classify.models import classifier_factories

    images = task.images[:, None] if task.images.ndim == 4 else task.images
    rows = []
    for name, make in classifier_factories(settings, task.shape, len(CLASSES)).items():
        for i in folds if folds is not None else range(split.n_folds):
            train, val = split.fold(i)
            tr, va = select(task.subjects, train), select(task.subjects, val)
            with tempfile.TemporaryDirectory() as logs:
                fit = fit_classifier(make, (images[tr], task.y[tr]), (images[va], task.y[va]), log_dir=logs,
                                     seed=seed + i, **fit_options(settings, len(CLASSES)))
            probs = predict_proba(fit.model, images[va])
            recall = [float((probs[task.y[va] == c].argmax(1) == c).mean()) for c in range(len(CLASSES))]
            rows.append({"model": name, "fold": i, "seed": seed + i,
                         "balanced_accuracy": classification_metrics(task.y[va], probs)["balanced_accuracy"],
                         **{f"recall_{c}": r for c, r in zip(CLASSES, recall, strict=True)},
                         "best_epoch": fit.best_epoch, "seconds": fit.seconds})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± SD over folds (all seeds pooled) per variant and network."""
    def mean_sd(v: pd.Series) -> str:
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"

    grouped = runs.groupby(["variant", "model"], sort=False)
    table = grouped.agg(balanced_accuracy=("balanced_accuracy", mean_sd), runs=("fold", "size"),
                        **{f"recall {c}": (f"recall_{c}", "mean") for c in CLASSES},
                        s_per_fold=("seconds", "mean"))
    return table.round(2).reset_index()


def main() -> None:
    from bench_ae_variants import emit_report, markdown  # the sibling study's report writers

    from nbutils.classify.settings import ClassifierSettings
    from nbutils.classify.splits import subject_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/cls/data", help="data_dir of the quick run (holds synthetic/quick-mni*)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 10, 20], help="base seeds (fold i uses seed + i)")
    p.add_argument("--variants", nargs="*", help="names of VARIANTS to run (default: all)")
    p.add_argument("--folds", type=int, nargs="+", help="only these folds (e.g. a timing run; default: all)")
    p.add_argument("--report", help="write the results table (markdown) here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    task, source = load_quick_task(args.data)
    split = subject_split(task.subjects, task.y, test_size=0.2, n_folds=QUICK["n_folds"], seed=0)
    print(f"{len(task.y)} subjects ({source}); {len(split.train_pool)} in the training pool, "
          f"{len(split.test)} test subjects left out", flush=True)
    runs = []
    for name in args.variants or VARIANTS:
        settings = ClassifierSettings.from_overrides({**QUICK, **VARIANTS[name]})
        for seed in args.seeds:
            t0 = time.perf_counter()
            runs.append(validation_scores(settings, task, split, seed, args.folds).assign(variant=name))
            print(f"{name}, seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = summary(pd.concat(runs, ignore_index=True))
    chosen = {k: v for k, v in dataclasses.asdict(ClassifierSettings.from_overrides({**QUICK, **CHOSEN})).items()
              if k in {**QUICK, **CHOSEN}}
    text = (
        f"# Tumour-network settings on validation folds, {date.today().isoformat()}\n\n"
        f"{source}; quick task of notebook 06 (40 subjects per class, 4 mm grid {task.shape}); "
        f"{len(split.train_pool)} training-pool subjects in {split.n_folds} folds, validation folds only "
        f"(the {len(split.test)} test subjects are never used). Seeds {args.seeds} (fold i: seed + i); "
        f"mean ± SD over folds and seeds; chance balanced accuracy 0.25. Chosen settings: {chosen}.\n\n"
        + markdown(table) + "\n"
    )
    emit_report(text, args.report)


if __name__ == "__main__":
    main()
