# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: nbutils
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (nbutils)
#     language: python
#     name: nbutils
#   nbutils:
#     minutes: 2.7
#     needs:
#     - '00'
# ---

# %% [markdown]
# # 02 · Train the normative 3D autoencoder
#
# A **normative model** learns what healthy brains look like, so that one new scan can be compared
# with it voxel by voxel. Here the model is a 3D convolutional autoencoder trained on healthy (CN)
# T1-weighted scans only: it squeezes each scan through a small bottleneck and reconstructs it.
# Anything it has never seen in healthy brains — a tumour, atrophy — it reconstructs poorly, and that
# reconstruction error becomes the deviation map of notebook 03.
#
# **Learning objectives**
#
# - split a cohort *by subject* into training, validation and test sets with patients only in test;
# - build an autoencoder **without skip connections** and explain why skips would hide anomalies;
# - train it with PyTorch Lightning the reproducible way (seeded, checkpointed, early-stopped, logged),
#   with the same code ready for GPUs or several nodes (DDP);
# - **cross-fit** an ensemble so that *every* healthy reference subject contributes an out-of-sample
#   residual, and derive the **normative statistics** — healthy residual mean/SD maps that depend on
#   age, sex and site, thresholds at a healthy false-positive rate, and a PCNtoolkit regional model —
#   stored beside the models.
#
# | Prerequisites | |
# |---|---|
# | Notebooks | 00 (synthetic cohort), run first with the same profile: it generates the cohort this notebook opens |
# | Concepts | convolution, autoencoders, train/validation splits |
# | Data | the synthetic cohort in MNI space (`<data_dir>/synthetic/<profile>-mni`), or a folder written by `nbutils prep` (parameter `dataset`) |
#
# **Expected CPU time** (2 cores): about 3 minutes with the `quick` profile, about a minute with `smoke`.

# %% tags=["parameters"]
from typing import Literal

reports_dir: str = "../reports"
data_dir: str = "../data"
seed: int = 0
profile: str = "quick"  # smoke | quick | full (set by `nbutils run --profile`)
cohort_seed: int = 0
dataset: str = ""  # folder written by `nbutils prep` (prep.tsv + demographics); empty: the synthetic cohort
# model
channels: list[int] = [16, 32, 64, 128]  # feature maps per level; 4 levels: 80x96x80 -> 5x6x5
latent_channels: int = 32
lr: float = 0.002
batch_size: int = 4
max_epochs: int = 40
patience: int = 8
max_minutes: float | None = 5.0  # wall-clock safety cap (stopping by time is not reproducible)
n_folds: int = 2  # cross-fitting folds, one ensemble member each (trained on the other folds)
retrain: bool = False  # train again even if a model built from the same scans, settings and seed is saved
test_fraction: float = 0.2
augment_scale: float = 0.0
augment_shift: float = 0.0
noise_std: float = 1.0  # denoising AE: coarse noise on the training input (0: plain AE); see section 2
noise_factor: int = 8  # the noise is drawn on a grid this many times coarser, then up-sampled
# normative statistics
sigma: float = 1.0  # voxels: smoothing of each residual map
map_sigma: float = 2.0  # voxels: smoothing of the healthy mean/SD maps
score_kind: Literal["abs", "positive", "negative"] = "abs"
median_size: int = 3
erode: int = 1
min_size: int = 8
profile_measure: Literal["mean_z", "mean_abs_z", "p95_abs_z"] = "mean_z"
atlas: str = "neuromorphometrics"
# hardware: the same code runs on GPUs / several nodes (for DDP launch python -m nbutils.normative.train)
accelerator: str = "cpu"
devices: int = 1
strategy: str = "auto"
num_nodes: int = 1

# %%
from nbutils.params import validate_parameters
from nbutils.reporting import print_config

P = validate_parameters(globals())
print_config()
P

# %% [markdown]
# ## 1 · The cohort and the subject split
#
# We use the synthetic cohort (real MNI152 anatomy with known ground truth; see notebook 00). Its MNI
# images are already skull-stripped and z-scored within the brain, on the 2 mm grid of
# Behrendt et al. (80×96×80). `load_bids` reads it like any BIDS dataset, so a real preprocessed
# dataset drops in by changing the folder: set `dataset` to a folder written by `nbutils prep` (for IXI:
# `nbutils prep --ixi <IXI-T1 folder> --out <folder>`, then `nbutils run --profile real -p dataset <folder>`;
# see the README) and every notebook, figure and metrics file names that dataset instead.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from nbutils.runs import model_folder, open_dataset

data = open_dataset(P)
model_dir = model_folder(P)
data.counts()

# %% [markdown]
# Only healthy subjects may train a *normative* model. `assign_splits` sets aside healthy **subjects**
# for testing (never scans: a person with two sessions stays on one side); every patient goes to test.
# Everyone else is the **healthy reference**, cut into `n_folds` cross-fitting folds balanced on site
# and age (`assign_folds`): the model of fold *k* trains on the other folds, so every reference subject
# gets a residual from a model that never saw them. That makes the reference as large as the healthy
# cohort allows (instead of a small validation set), and the same for every retrained replicate.

# %%
from nbutils.normative.data import assign_folds, assign_splits

splits = assign_folds(assign_splits(data.table, 0.0, P.test_fraction, seed=P.seed), P.n_folds, seed=P.seed)
pd.crosstab(splits["diagnosis"], splits["fold"].map(lambda f: "test" if f < 0 else f"fold {f}"))

# %% [markdown]
# **Exercise.** Why must every reference residual come from a model that did *not* train on that
# subject when we estimate the residual SD per voxel?
#
# <details><summary>Solution</summary>
#
# The network has partly memorised its training scans, so their residuals are smaller than those of
# any new scan. An SD estimated on them would be too small, every new healthy scan would look
# abnormal, and the z-scores would be miscalibrated. Held-out healthy scans behave like the new
# subjects we want to test.
# </details>

# %% [markdown]
# ## 2 · An autoencoder without skip connections
#
# Each encoder level halves the grid with a stride-2 convolution (MONAI `Convolution` blocks:
# conv → instance norm → PReLU); a 1×1×1 convolution forms the bottleneck; the decoder mirrors the
# encoder with transposed convolutions. A U-Net would add *skip connections* from encoder to decoder —
# great for segmentation, fatal here: they copy the input, anomaly included, straight to the output
# (Baur et al. 2021). The only path from input to output is the bottleneck.
#
# It is trained as a **denoising** autoencoder (Kascenas et al. 2022): each training scan gets coarse
# Gaussian noise (drawn on a grid 8× coarser, SD `noise_std`, inside the brain) and the network must
# reconstruct the *clean* scan, so it learns to replace blob-like departures from healthy anatomy.
# This setting was chosen on healthy validation scans with anomalies we painted in ourselves, never on
# the test subjects (`benchmarks/bench_ae_variants.py`, synthetic cohort, quick, non-test CN only: 30
# train / 10 validation subjects, 30 inserted brighter/darker ellipsoids of 0.5–20 cm³, 15 epochs, seed
# 0, 2026-12-01). Inserted-anomaly voxel AUPRC: denoising 0.62, plain L1 autoencoder 0.42, intensity
# z-score without a network 0.47 (chance 0.005); best Dice 0.62 vs 0.46 vs 0.50; validation L1 0.374
# vs 0.370; same cost per epoch. Two convolutions per level, an L1 + SSIM loss (both stopped early by
# the time cap on a loaded machine) and 3 levels with a wider latent (AUPRC 0.04: it reconstructs the
# anomalies too) did not do better. One seed and one synthetic cohort: set `noise_std = 0` for the
# plain autoencoder.

# %%
import torch

from nbutils.normative.data import load_volumes
from nbutils.normative.model import NormativeAutoencoder

net = NormativeAutoencoder(channels=P.channels, latent_channels=P.latent_channels, lr=P.lr)
shape = load_volumes(splits["path"].head(1)).shape[1:]
latent = net.net.encode(torch.zeros(1, 1, *shape))
n_params = sum(p.numel() for p in net.parameters())
print(f"input {shape} -> latent {tuple(latent.shape[1:])} "
      f"({latent.numel()} numbers, {latent.numel() / (shape[0] * shape[1] * shape[2]):.1%} of the voxels); "
      f"{n_params:,} parameters")

# %% [markdown]
# ## 3 · Training with Lightning
#
# `build_normative_model` trains with Lightning conventions — `seed_everything(seed, workers=True)`,
# `save_hyperparameters` (plain types, so checkpoints load with `torch.load(weights_only=True)`),
# `ModelCheckpoint` (best + last), `EarlyStopping` on the held-out fold's L1 and a `CSVLogger` — once per
# fold, and then fits the normative statistics from the out-of-fold residuals. The members together are
# the normative model (`ensemble.json`): a new scan's z-map combines the members' z-maps as correlated
# z-scores (`ensemble_z`: their plain mean would be under-dispersed), and their spread is an uncertainty map. `accelerator`, `devices`, `strategy` and `num_nodes` are passed
# straight to the `Trainer`; for multi-process DDP run the same code as a script:
# `python -m nbutils.normative.train --table subjects.tsv --out DIR --devices 2 --strategy ddp`.

# %%
from nbutils.normative.pipeline import build_normative_model

result, stats, model = build_normative_model(
    splits,
    model_dir,
    n_folds=P.n_folds,
    model={"channels": P.channels, "latent_channels": P.latent_channels, "lr": P.lr},
    data={"batch_size": P.batch_size, "augment_scale": P.augment_scale,
          "augment_shift": P.augment_shift, "noise_std": P.noise_std, "noise_factor": P.noise_factor},
    max_epochs=P.max_epochs,
    patience=P.patience,
    max_minutes=P.max_minutes,
    seed=P.seed,
    accelerator=P.accelerator,
    devices=P.devices,
    strategy=P.strategy,
    num_nodes=P.num_nodes,
    stats_options={"atlas": P.atlas, "resolution": data.resolution, "sigma": P.sigma,
                   "map_sigma": P.map_sigma, "measure": P.profile_measure,
                   "postprocessing": {"score": P.score_kind, "median_size": P.median_size,
                                      "erode": P.erode, "min_size": P.min_size}},
    data_source=data.source,
    progress=False,
    reuse=not P.retrain,
)
import json

training = json.loads((model_dir / "training.json").read_text())
if result.reused:
    print(f"REUSED the model saved in {model_dir}: built earlier from the same scans, settings and seed "
          "(set retrain=True to train again)")
print(f"{training['n_folds']} cross-fitted members trained {result.epochs} epochs in {result.train_seconds:.0f} s "
      f"(stopped by {training['stopped_by']}); mean held-out-fold L1 {result.best_val_loss:.4f}  ({data.source})")
print("model:", result.best_checkpoint)
print(f"reference: {stats.provenance['reference']}; conditional on {stats.provenance['covariate_terms']}; "
      f"regional model: {stats.provenance['regional_model']}")

# %% [markdown]
# The learning curve comes from the `CSVLogger` file, read back with pandas. Training and validation
# loss should fall together; a validation loss that turns up while training loss keeps falling is
# over-fitting, and early stopping keeps the best checkpoint.

# %%
from nbutils.normative.plots import plot_learning_curve
from nbutils.normative.train import read_learning_curve
from nbutils.reporting import save_figure

fig, axes = plt.subplots(1, len(result.metrics_csv), figsize=(4.2 * len(result.metrics_csv), 3.2), squeeze=False)
for k, (ax, csv) in enumerate(zip(axes[0], result.metrics_csv, strict=True)):
    plot_learning_curve(read_learning_curve(csv), ax=ax)
    ax.set_title(f"member {k} (held-out fold {k})", fontsize=8)
fig.suptitle(f"learning curves ({data.source})", fontsize=8)
fig.tight_layout()
save_figure(fig, P.reports_dir, "02_train_normative_autoencoder", "learning_curve")
plt.show()

# %% [markdown]
# ## 4 · What the model reconstructs
#
# A healthy reference scan, its reconstruction by the member that did not train on it, the residual and
# the z-map against healthy people of the same age, sex and site. The reconstruction is smoother than the input — the bottleneck cannot carry every
# detail — which is why residuals are compared with *healthy residuals at the same voxel* rather than
# used raw.

# %%

from nbutils.normative.model import members_of
from nbutils.normative.pipeline import covariates_of, deviation_maps
from nbutils.normative.plots import plot_reconstruction

subjects = pd.read_csv(model_dir / "subjects.tsv", sep="\t")
ref_rows = subjects[subjects["fold"] == 0].head(1)
example = load_volumes(ref_rows["path"])
recon, z = deviation_maps(members_of(model)[0], stats, example, covariates_of(ref_rows))
who = ref_rows.iloc[0]
fig = plot_reconstruction(example[0], recon[0], z[0],
                          title=f"{who['participant_id']} (healthy, {who['age']:.0f} y {who['sex']}, "
                                f"{who['site']}; member 0 never saw it; {data.source})")
save_figure(fig, P.reports_dir, "02_train_normative_autoencoder", "reconstruction")
plt.show()

# %% [markdown]
# ## 5 · The normative statistics beside the checkpoint
#
# Everything needed to turn a new scan into a calibrated deviation map is saved beside the models
# (`normative_stats.npz` + `.json`, and the PCNtoolkit regional model in `normative_regional/`):
# coefficient maps of the healthy residual mean and log-SD as functions of age, sex and site (with
# the unconditional maps kept for scans without covariates), thresholds at 1 % and 5 % voxel
# false-positive rate (from leave-one-out z-maps of the reference subjects, so never from lesions),
# the post-processing, and the regional model. Notebooks 03 and 04 and the `nbutils report` command
# need only this folder. Below: what the reference expects of a healthy 30- and 80-year-old.
# Beside them, `scan_guard.json` holds the healthy reference's range of two whole-scan measures
# (correlation with the reference mean image, mean |z|): a scan outside it — another scanner or
# contrast, a failed preprocessing — is flagged wherever its profile is shown (`nbutils.normative.guard`).

# %%
from nbutils.normative.plots import plot_conditional_norm
from nbutils.normative.stats import stats_paths

print([p.name for p in stats_paths(result.best_checkpoint)], "thresholds:", stats.thresholds)
from nbutils.normative.guard import guard_path, load_guard

guard = load_guard(result.best_checkpoint) if guard_path(result.best_checkpoint).is_file() else None
print("scan guard (scans unlike this reference get a warning):",
      {k: guard.describe(k) for k in guard.ranges} if guard else "none: fewer than 3 reference scans")
site = subjects.loc[subjects["fold"] >= 0, "site"].mode().iloc[0]
fig = plot_conditional_norm(stats, ages=(30, 80), sex="F", site=site)
fig.suptitle(f"expected healthy residual, women at {site}, by age ({data.source})", fontsize=8)
save_figure(fig, P.reports_dir, "02_train_normative_autoencoder", "normative_maps")
plt.show()

# %% [markdown]
# **Exercise.** The SD map is largest at tissue borders and the brain rim. Why, and what does that do
# to the z-score of a small lesion there?
#
# <details><summary>Solution</summary>
#
# Small misalignments between subjects (registration is never perfect, brains differ in shape) move
# sharp intensity edges by a voxel or two, so residuals vary most there. A large SD shrinks z, so a
# lesion on an edge needs a larger residual to be flagged — the price of calibration.
# </details>
#
# ## 6 · Metrics

# %%
from nbutils.reporting import write_metrics

write_metrics(
    P.reports_dir,
    "02_train_normative_autoencoder",
    {"train_seconds": result.train_seconds, "epochs": result.epochs,
     "best_val_loss": result.best_val_loss,
     "stopped_by": training["stopped_by"],
     "n_folds": int(training["n_folds"]),
     "n_reference": int(stats.provenance["n_reference"]),
     "covariate_terms": stats.provenance["covariate_terms"],
     "regional_model": stats.provenance["regional_model"],
     "model_dir": str(model_dir)},
    data_source=data.source,
)

# %% [markdown]
# ## Summary
#
# - A normative model is trained on healthy subjects only; the split is by subject and patients are
#   kept for testing. Cross-fitting gives every healthy reference subject an out-of-sample residual.
# - The reference is conditional: each voxel's expected residual and its spread depend on age, sex and
#   site, and each region has a PCNtoolkit normative model.
# - The autoencoder has no skip connections, so everything it outputs passed through the bottleneck.
# - Lightning gives reproducible, checkpointed, logged training that scales from this CPU to DDP.
# - The healthy residual statistics and thresholds live beside the members: one folder is the model.
#
# ## What to read next
#
# Notebook **03** turns residuals into calibrated deviation maps and measures tumour detection against
# simple baselines; notebook **04** aggregates them into regional profiles and single-subject reports.
#
# ## References
#
# - The seed study (`seeds/000_…`): normative 3D convolutional autoencoder on ~100 healthy IXI scans,
#   voxel-wise deviation maps, regional profiles.
# - Baur C. et al. (2021) Autoencoders for unsupervised anomaly segmentation in brain MR images: a
#   comparative study. *Medical Image Analysis* 69:101952.
# - Behrendt F. et al. Patched diffusion models / unsupervised anomaly detection benchmarks on IXI at
#   2 mm (80×96×80) with thresholds at healthy false-positive rates.
# - Pinaya W. H. L. et al. (2019) Using deep autoencoders to identify abnormal brain structural
#   patterns in neuropsychiatric disorders. *NeuroImage: Clinical*.
# - PyTorch Lightning and MONAI documentation.
