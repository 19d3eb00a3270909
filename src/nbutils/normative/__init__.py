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
explorer
    Pure slice/overlay functions, static figures and the ipywidgets explorer.
report
    The single-subject HTML report and its ``nbutils report`` command.

Submodules are imported on demand so ``import nbutils.normative`` stays light.
"""
