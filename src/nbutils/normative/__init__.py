"""Normative 3D autoencoder: training, calibrated deviation maps, regional profiles, reports.

Modules
-------
data
    Subject splits and a LightningDataModule over MNI-grid volumes.
model
    A 3D convolutional autoencoder without skip connections and its LightningModule.
train
    Training with Lightning (checkpoints, early stopping, CSV logs, DDP-ready) and loading.
deviation
    Residual maps, voxel-wise z-scores against healthy references, thresholds at a
    healthy false-positive rate, post-processing and detection metrics.
regional
    Atlas-region aggregation, regional deviation profiles and total deviation.
stats
    The normative statistics saved beside a checkpoint (``normative_stats.npz/json``).
pipeline
    Fit the statistics, build a model, deviation maps and profiles, analyse one scan.
evaluate
    Compare detection methods at healthy thresholds; profile stability across retrains.
plots
    Pure slice/overlay/plane drawing functions and the figures of notebooks 02-04 and the report.
explorer
    The ipywidgets deviation explorer (draws with ``plots``).
report
    The single-subject HTML report and its ``nbutils report`` command.
guard
    The scan guard: flags scans unlike the healthy reference (``scan_guard.json``).

Where models live: notebook 02 writes ``<data_dir>/models/<profile>/normative_ae/``
(``checkpoints/best.ckpt`` + ``last.ckpt`` with ``normative_stats.*`` and ``scan_guard.json`` beside them,
``logs/``, ``subjects.tsv`` with the split, ``training.json``); notebooks 03 and 04
and ``nbutils report --model .../best.ckpt`` read it from there.

Submodules are imported on demand so ``import nbutils.normative`` stays light.
"""
