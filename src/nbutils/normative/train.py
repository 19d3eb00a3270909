"""Train the normative autoencoder with Lightning, and load it back safely.

:func:`train_autoencoder` follows the Lightning conventions: hyper-parameters
saved in the checkpoint, ``ModelCheckpoint`` (best + last), ``EarlyStopping``
on the validation loss, a ``CSVLogger`` (read back with
:func:`read_learning_curve`) and ``seed_everything(seed, workers=True)``.
``accelerator``, ``devices``, ``strategy`` and ``num_nodes`` are plain
arguments, so the same call trains on a laptop CPU, a GPU, or several nodes
with DDP. Lightning's ``"ddp"`` strategy re-launches the running *script*
once per extra device, so for DDP run this module as a script::

    python -m nbutils.normative.train --table subjects.tsv --out models/ae \\
        --accelerator cpu --devices 2 --strategy ddp --max-epochs 1

The same options are the ``nbutils train`` command (:func:`register`).

Output layout of ``out``::

    checkpoints/best.ckpt, checkpoints/last.ckpt
    logs/version_0/metrics.csv, logs/version_0/hparams.yaml
    subjects.tsv       (the table with its ``split`` column)
    training.json      (seconds, epochs, best validation loss, settings)

Training happens in ``out/.training`` and the results are moved into place
only when it succeeds, so an interrupted run never leaves a half-written
checkpoint under the final name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

__all__ = [
    "TrainResult",
    "load_autoencoder",
    "main",
    "read_learning_curve",
    "register",
    "run",
    "train_autoencoder",
]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics_csv: Path
    train_seconds: float
    epochs: int
    best_val_loss: float


def _is_launcher() -> bool:
    """True in the process the user started (not in a DDP child Lightning spawned)."""
    return os.environ.get("LOCAL_RANK") is None and os.environ.get("NODE_RANK", "0") == "0"


def train_autoencoder(
    table: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: dict | None = None,
    data: dict | None = None,
    max_epochs: int = 50,
    patience: int = 10,
    seed: int = 0,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    limit_train_batches: int | float | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> TrainResult | None:
    """Train :class:`~nbutils.normative.model.NormativeAutoencoder` on healthy scans.

    Parameters
    ----------
    table : DataFrame or path
        Subject table (see :class:`~nbutils.normative.data.NormativeDataModule`).
    out_dir : path
        Output folder (layout in the module docstring); replaced on success.
    model : dict, optional
        Keyword arguments of ``NormativeAutoencoder`` (channels, latent_channels, lr, ...).
    data : dict, optional
        Keyword arguments of ``NormativeDataModule`` (batch_size, mask, augment_*, ...).
    max_epochs, patience : int
        Epoch limit and early-stopping patience on ``val_loss``.
    seed : int
        Global seed (``seed_everything(seed, workers=True)``) and split seed unless
        ``data`` sets ``split_seed``.
    accelerator, devices, strategy, num_nodes, precision
        Passed to :class:`pytorch_lightning.Trainer`.
    limit_train_batches : int or float, optional
        Passed to the Trainer (handy for smoke runs).
    max_minutes : float, optional
        Wall-clock safety limit of training (Lightning ``max_time``). Set it above the
        expected time: when it stops training, the result depends on machine speed
        (a warning says so and ``training.json`` records ``stopped_by``).
    progress : bool
        Show Lightning's progress bar.

    Returns
    -------
    TrainResult or None
        ``None`` in DDP worker processes other than global rank 0.
    """
    import pytorch_lightning as pl
    import torch

    from nbutils.quiet import quiet_lightning

    from .data import NormativeDataModule
    from .model import NormativeAutoencoder

    out_dir = Path(out_dir)
    work = _fresh_work_dir(out_dir)
    pl.seed_everything(seed, workers=True, verbose=False)
    data_kwargs = {"split_seed": seed, **(data or {})}
    dm = NormativeDataModule(table, progress=progress, **data_kwargs)
    net = NormativeAutoencoder(**(model or {}))
    # one process: hide Lightning's banner; several (DDP): keep its launch messages ("Starting with
    # N processes", ranks), which are how a user sees the processes start
    single = devices in (1, "1") and int(num_nodes) == 1
    with quiet_lightning() if single else contextlib.nullcontext():
        trainer, ckpt, stop = _trainer(
            work, max_epochs=max_epochs, patience=patience, accelerator=accelerator, devices=devices,
            strategy=strategy, num_nodes=num_nodes, precision=precision,
            limit_train_batches=limit_train_batches, max_minutes=max_minutes, progress=progress,
        )  # fmt: skip
        torch.set_num_threads(max(1, torch.get_num_threads()))
        start = time.perf_counter()
        trainer.fit(net, datamodule=dm)
        seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None

    best_score = ckpt.best_model_score
    summary = {
        "train_seconds": round(seconds, 2),
        "epochs": int(trainer.current_epoch),
        "stopped_by": _stop_reason(trainer, stop, max_epochs, max_minutes),
        "best_val_loss": float(best_score) if best_score is not None else float("nan"),
        "seed": seed,
        "max_epochs": max_epochs,
        "max_minutes": max_minutes,
        "patience": patience,
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "num_nodes": num_nodes,
        "model": dict(net.hparams),
        "data": {k: v for k, v in data_kwargs.items() if k != "mask" or isinstance(v, str)},
        "n_subjects": dm.table.groupby("split")["participant_id"].nunique().to_dict(),
    }
    return _publish(work, out_dir, dm.table, summary)


def _fresh_work_dir(out_dir: Path) -> Path:
    """``out_dir/.training``, emptied by the launching process (DDP children share it)."""
    work = out_dir / ".training"
    if _is_launcher() and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return work


def _trainer(
    work: Path,
    *,
    max_epochs: int,
    patience: int,
    accelerator: str,
    devices: int | str,
    strategy: str,
    num_nodes: int,
    precision: str,
    limit_train_batches: int | float | None,
    max_minutes: float | None,
    progress: bool,
):
    """A deterministic Trainer writing best/last checkpoints and CSV logs under ``work``.

    Returns ``(trainer, checkpoint_callback, early_stopping_callback)``.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    ckpt = ModelCheckpoint(
        dirpath=work / "checkpoints", filename="best", monitor="val_loss", mode="min",
        save_last=True, save_top_k=1,
    )
    stop = EarlyStopping(monitor="val_loss", mode="min", patience=patience)
    logger = CSVLogger(save_dir=work, name="logs", version=0)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,
        max_epochs=max_epochs,
        max_time=None if max_minutes is None else timedelta(minutes=max_minutes),
        callbacks=[ckpt, stop],
        logger=logger,
        deterministic=True,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        limit_train_batches=limit_train_batches,
        num_sanity_val_steps=0,
    )
    return trainer, ckpt, stop


def _stop_reason(trainer, stop, max_epochs: int, max_minutes: float | None) -> str:
    """Why training ended; warns when the wall-clock limit (not reproducible) stopped it."""
    if stop.stopped_epoch > 0:
        return "early_stopping"
    if trainer.current_epoch >= max_epochs:
        return "max_epochs"
    warnings.warn(
        f"training stopped by the {max_minutes}-minute time limit after {trainer.current_epoch} "
        f"of {max_epochs} epochs: the result depends on machine speed (not reproducible); "
        "raise max_minutes or lower max_epochs",
        stacklevel=3,
    )
    return "max_time"


def _publish(work: Path, out_dir: Path, table: pd.DataFrame, summary: dict) -> TrainResult:
    """Write the split table and summary, then move the finished run from ``work`` into ``out_dir``."""
    from nbutils.io import write_json, write_table

    write_table(work / "subjects.tsv", table)
    write_json(work / "training.json", summary)
    (work / "checkpoints" / "best.ckpt").exists() or shutil.copy(
        work / "checkpoints" / "last.ckpt", work / "checkpoints" / "best.ckpt"
    )
    for name in ("checkpoints", "logs", "subjects.tsv", "training.json"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(work / name, target)
    shutil.rmtree(work, ignore_errors=True)
    return TrainResult(
        out_dir=out_dir,
        best_checkpoint=out_dir / "checkpoints" / "best.ckpt",
        last_checkpoint=out_dir / "checkpoints" / "last.ckpt",
        metrics_csv=out_dir / "logs" / "version_0" / "metrics.csv",
        train_seconds=summary["train_seconds"],
        epochs=summary["epochs"],
        best_val_loss=summary["best_val_loss"],
    )


def read_learning_curve(metrics_csv: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch ``train_loss`` and ``val_loss`` from a CSVLogger ``metrics.csv``.

    Lightning writes training and validation metrics on separate rows; they are
    merged on ``epoch``.
    """
    path = Path(metrics_csv)
    if not path.exists():
        raise FileNotFoundError(f"learning-curve log not found: {path}")
    raw = pd.read_csv(path)
    cols = [c for c in ("train_loss", "val_loss") if c in raw.columns]
    if "epoch" not in raw.columns or not cols:
        raise ValueError(f"{path}: no epoch/train_loss/val_loss columns (has {list(raw.columns)})")
    return raw.groupby("epoch")[cols].mean().reset_index()


def load_autoencoder(checkpoint: str | os.PathLike):
    """Load a trained :class:`NormativeAutoencoder` from a checkpoint, in eval mode.

    The file is read with ``torch.load(..., weights_only=True)``: only tensors
    and plain Python types are unpickled, never arbitrary objects. An
    ``ensemble.json`` (written by :func:`nbutils.normative.pipeline.build_normative_model`)
    loads every member checkpoint it lists into an
    :class:`~nbutils.normative.model.EnsembleAutoencoder`.
    """
    import json

    import torch

    from .model import EnsembleAutoencoder, NormativeAutoencoder

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".json":
        try:
            members = json.loads(path.read_text())["members"]
        except (ValueError, KeyError) as err:
            raise ValueError(f"{path}: not an ensemble file (needs a 'members' list)") from err
        ensemble = EnsembleAutoencoder([load_autoencoder(path.parent / m) for m in members])
        return ensemble.eval()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        raise ValueError(f"{path}: not a loadable weights-only checkpoint ({err})") from err
    if "state_dict" not in state or "hyper_parameters" not in state:
        raise ValueError(f"{path}: not a NormativeAutoencoder checkpoint (keys {sorted(state)})")
    model = NormativeAutoencoder(**dict(state["hyper_parameters"]))
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command to the ``nbutils`` parser (also the parser of :func:`main`)."""
    p = subparsers.add_parser(
        "train",
        help="train the normative 3D autoencoder (DDP-ready)",
        description="Train the normative 3D autoencoder on the healthy subjects of a table. "
        "For the 'ddp' strategy run it as 'python -m nbutils.normative.train'.",
    )
    p.add_argument("--table", required=True, help="TSV/CSV with participant_id, path, diagnosis")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="{}", help="JSON of NormativeAutoencoder arguments")
    p.add_argument("--data", default="{}", help="JSON of NormativeDataModule arguments")
    p.add_argument("--max-epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", default="1")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--limit-train-batches", type=float, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``nbutils train`` and ``python -m nbutils.normative.train``."""
    devices: int | str = int(args.devices) if args.devices.isdigit() else args.devices
    limit = args.limit_train_batches
    if limit is not None and limit >= 1:
        limit = int(limit)
    result = train_autoencoder(
        args.table,
        args.out,
        model=json.loads(args.model),
        data=json.loads(args.data),
        max_epochs=args.max_epochs,
        patience=args.patience,
        seed=args.seed,
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        limit_train_batches=limit,
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
    )
    if result is not None:
        print(json.dumps({k: str(v) for k, v in asdict(result).items()}))
    return 0


def _parser() -> argparse.ArgumentParser:
    """The ``train`` sub-command's parser, standalone (DDP re-runs this module as a script)."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    parser = subparsers.choices["train"]
    parser.prog = "python -m nbutils.normative.train"
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m nbutils.normative.train`` (see the module docstring)."""
    args = _parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover - exercised by the DDP test in a subprocess
    raise SystemExit(main())
