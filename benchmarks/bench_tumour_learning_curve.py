"""How do the 3D tumour networks of notebook 06 scale with width and training subjects? Validation folds only.

Run on demand (a study, not a test; about a minute per variant and fold set)::

    nice -n 5 .venv/bin/python benchmarks/bench_tumour_learning_curve.py --data /tmp/cls/data \\
        --per-class 40 --variant pif-wide '{"model": "pif", "channels": [8, 16, 32, 64]}'

A plain PyTorch loop (no Lightning, no per-epoch validation: about 1.6× faster
than ``fit_classifier``) with notebook 06's recipe: voxel z-scores against the
control training subjects of the fold, left-right flips of the z-map, class-weighted
cross-entropy, Adam with a one-cycle schedule peaking at 3·10⁻³ over 25 epochs,
last-epoch weights. Only the folds of the training pool are used (each fold's
network trains on the other folds and is scored on its own validation subjects);
the test subjects of ``subject_split(test_size=0.2, n_folds=3, seed=0)`` are
never loaded into a model. Variant keys (JSON): ``model`` (``"pif"`` or
``"baseline"``), ``channels``, ``pool`` (the baseline's global pooling, ``"max"``),
``epochs``, ``frac`` (train on that share of each class of the fold's training
subjects: a learning curve), ``coord`` (append three normalised coordinate
channels), ``raw`` (the image itself instead of the z-map), ``smooth`` (Gaussian
σ in voxels on the z-map), ``age`` (z against a voxel-wise linear regression of
the controls' intensity on age), ``common`` (zero the z-map where not every
control has brain), ``noise`` (SD of Gaussian noise added in training), ``loo`` (each
training control z-scored against the *other* training controls, leave-one-out, so
its z-map is distributed as a held-out control's rather than shrunk by being part of
its own reference), ``ae`` (the normative autoencoder's deviation map from notebook 02's model of the
same data folder, area-averaged to the working grid: ``"replace"`` feeds it instead of the voxel z-map,
``"add"`` as a second channel; subjects in the autoencoder's healthy reference get the z-map of the
cross-fitted member that did not train on them, every other subject the ensemble's), ``aux`` (weight of an
auxiliary loss: a 1×1×1 convolution on the last shared feature maps predicts which cells hold tumour, the
ground-truth mask max-pooled to that grid, binary cross-entropy weighted for the rare tumour cells; the
classification head is unchanged and the auxiliary head is dropped for validation).
``--task ad`` runs notebook 05's AD vs CN task instead (chance 0.5).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class CoordChannels(nn.Module):
    """Append normalised x, y, z coordinate channels to the input of ``inner``."""

    def __init__(self, inner: nn.Module, shape) -> None:
        super().__init__()
        self.inner = inner
        grid = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
        self.register_buffer("grid", torch.stack(grid)[None])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.cat([z, self.grid.expand(len(z), -1, -1, -1, -1)], 1))


def make_network(cfg: dict, shape, n_classes: int) -> nn.Module:
    """The notebook's baseline (max pooling) or PIF network, as ``cfg`` varies it."""
    from nbutils.classify.models import BaselineCNN, PIFNet

    channels = cfg.get("channels", [4, 8, 16, 32])
    in_channels = (2 if cfg.get("ae") == "add" else 1) + (3 if cfg.get("coord") else 0)
    if cfg["model"] == "pif":
        net = PIFNet(shape, n_classes, channels, pif_channels=8, patch_size=3, hidden=32, dropout=0.3,
                     in_channels=in_channels)
    else:
        net = BaselineCNN(n_classes, channels, in_channels=in_channels, hidden=32, dropout=0.3,
                          pooling=cfg.get("pool", "max"))
    return CoordChannels(net, shape) if cfg.get("coord") else net


def autoencoder_z(task, data_dir: str, chunk: int = 16) -> torch.Tensor:
    """Out-of-sample deviation maps ``(N, 1, *task.shape)`` of the task's subjects from notebook 02's model.

    A subject of the autoencoder's healthy reference takes the z-map of the member that was not trained on it
    (member k trained on every fold but k); every other subject takes the ensemble's calibrated z-map.
    """
    from bench_tumour_settings import quick_params

    from nbutils.classify.volumes import resize_volumes
    from nbutils.normative.data import load_volumes
    from nbutils.normative.pipeline import covariates_of, ensemble_z, member_z_maps
    from nbutils.runs import open_normative_model

    run = open_normative_model(quick_params(data_dir))
    reference = run.reference()
    fold_of = dict(zip(reference["participant_id"], reference["fold"], strict=True))
    maps = []
    for start in range(0, len(task.table), chunk):
        rows = task.table.iloc[start:start + chunk]
        _, member_z = member_z_maps(run.model, run.stats, load_volumes(rows["path"], progress=False),
                                    covariates_of(rows))
        z = ensemble_z(member_z, run.stats.mask)
        for j, pid in enumerate(rows["participant_id"]):
            if pid in fold_of:
                z[j] = member_z[int(fold_of[pid]), j]
        maps.append(resize_volumes(np.clip(z, -10, 10), task.shape))
        print(f"  autoencoder z-maps: {start + len(rows)}/{len(task.table)}", flush=True)
    return torch.as_tensor(np.concatenate(maps)[:, None], dtype=torch.float32)


def network_input(cfg: dict, images: torch.Tensor, controls: np.ndarray, age: torch.Tensor,
                  ae_z: torch.Tensor | None = None) -> torch.Tensor:
    """What the network sees: the z-map against the ``controls`` (training images of class 0), or a variant."""
    from scipy import ndimage

    from nbutils.classify.models import VoxelStandardise

    if cfg.get("raw"):
        return images.clone()
    norm = VoxelStandardise(images.shape[2:]).fit(images[controls])
    with torch.no_grad():
        z = norm(images)
    if cfg.get("age"):  # voxel-wise intensity ~ 1 + age over the controls; z of the residual
        a = (age - age[controls].mean()) / 10
        design = torch.stack([torch.ones(len(a)), a], 1)
        flat = images.reshape(len(images), -1)
        beta = torch.linalg.lstsq(design[controls], flat[controls]).solution
        sd = (flat[controls] - design[controls] @ beta).pow(2).sum(0).div(len(controls) - 2).sqrt()
        sd = torch.clamp(sd, min=float(torch.quantile(sd[sd > 0], 0.1)))
        z = torch.clamp((flat - design @ beta) / sd, -5, 5).reshape(images.shape)
    if cfg.get("loo"):  # each training control against the *other* controls, as a held-out control is
        x = images[controls].double()
        n, total, total_sq = len(x), x.sum(0), x.pow(2).sum(0)
        mean = (total - x) / (n - 1)
        sd = ((total_sq - x.pow(2)) / (n - 1) - mean.pow(2)).clamp(min=0).sqrt()
        sd = sd.clamp(min=float(norm.scale.min()))  # the reference's own SD floor
        z[controls] = torch.clamp((x - mean) / sd, -norm.clip, norm.clip).float()
    if cfg.get("smooth"):
        sigma = cfg["smooth"]
        z = torch.as_tensor(ndimage.gaussian_filter(z.numpy(), (0, 0, sigma, sigma, sigma)))
    if cfg.get("common"):
        z = z * ((images[controls] != 0).all(0, keepdim=True))
    if cfg.get("ae") == "replace":
        z = ae_z
    elif cfg.get("ae") == "add":
        z = torch.cat([z, ae_z], 1)
    return z


def tumour_masks(task) -> torch.Tensor:
    """Ground-truth tumour masks ``(N, 1, *task.shape)`` on the working grid (all zero for controls)."""
    from bench_tumour_contrast import tumour_mask

    from nbutils.classify.volumes import resize_labels

    masks = [resize_labels(tumour_mask(r).astype(np.uint8), task.shape) > 0 for r in task.table.itertuples()]
    return torch.as_tensor(np.stack(masks)[:, None], dtype=torch.float32)


def logits_and_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits of ``net`` and the output of its shared blocks (``net.features``), in one forward pass."""
    seen = []
    hook = net.features.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        logits = net(x)
    finally:
        hook.remove()
    return logits, seen[0]


def fold_score(cfg: dict, images: torch.Tensor, y: torch.Tensor, age: torch.Tensor, train: np.ndarray,
               val: np.ndarray, seed: int, ae_z: torch.Tensor | None = None,
               masks: torch.Tensor | None = None) -> tuple[float, list[float]]:
    """Validation balanced accuracy and per-class recall of one fold's network."""
    from nbutils.classify.lightning import balanced_class_weights
    from nbutils.classify.metrics import classification_metrics

    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    if cfg.get("frac"):
        rng = np.random.default_rng(seed)
        train = np.sort(np.concatenate([
            rng.permutation(train[y[train].numpy() == c])[: round(cfg["frac"] * int((y[train] == c).sum()))]
            for c in range(n_classes)]))
    z = network_input(cfg, images, train[y[train].numpy() == 0], age, ae_z)
    net, epochs, batch = make_network(cfg, images.shape[2:], n_classes), cfg.get("epochs", 25), 8
    aux_head, aux_pos_weight = None, None
    if cfg.get("aux"):
        with torch.no_grad():
            probe = logits_and_features(net, z[:1])[1]  # (1, channels, *cells) of the last shared block
        cells = F.adaptive_max_pool3d(masks, probe.shape[2:])  # 1 where any tumour voxel falls in the cell
        aux_head = nn.Conv3d(probe.shape[1], 1, 1)
        share = float(cells[train].mean())
        aux_pos_weight = torch.tensor((1 - share) / max(share, 1e-6))
    params = list(net.parameters()) + (list(aux_head.parameters()) if aux_head is not None else [])
    opt = torch.optim.Adam(params, lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * -(-len(train) // batch))
    weight = torch.tensor(balanced_class_weights(y[train].numpy(), n_classes))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            xb = z[idx].clone()
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb[flip] = xb[flip].flip(2)
            if cfg.get("noise"):
                xb = xb + cfg["noise"] * torch.randn(xb.shape, generator=gen)
            if aux_head is None:
                loss = F.cross_entropy(net(xb), y[idx], weight=weight)
            else:
                logits, feats = logits_and_features(net, xb)
                target = cells[idx].clone()
                target[flip] = target[flip].flip(2)
                aux = F.binary_cross_entropy_with_logits(aux_head(feats), target, pos_weight=aux_pos_weight)
                loss = F.cross_entropy(logits, y[idx], weight=weight) + cfg["aux"] * aux
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        probs = F.softmax(net(z[val]), 1).numpy()
    truth = y[val].numpy()
    recall = [float((probs[truth == c].argmax(1) == c).mean()) for c in range(n_classes)]
    return classification_metrics(truth, probs)["balanced_accuracy"], recall


def main() -> None:
    from bench_tumour_settings import load_quick_task

    from nbutils.classify.splits import subject_split

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/cls/data", help="data_dir of the quick run (holds synthetic/quick-mni*)")
    p.add_argument("--task", choices=("tumour", "ad"), default="tumour", help="notebook 06's or notebook 05's task")
    p.add_argument("--per-class", type=int, default=40, help="tumour task: subjects per class (missing ones generated)")
    p.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="base seeds (fold i trains with seed + i)")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.task == "ad":
        from types import SimpleNamespace

        from nbutils.classify.volumes import load_task
        from nbutils.runs import open_dataset

        data = open_dataset(SimpleNamespace(data_dir=args.data, profile="quick", cohort_seed=0, seed=0, dataset=""))
        task = load_task(data.table, {"CN": ["CN"], "AD": ["AD"]}, working_resolution=4.0,
                         resolution=data.resolution, progress=False)
        source = data.source
    else:
        task, source = load_quick_task(args.data, n_per_class=args.per_class)
    images = torch.as_tensor(task.images[:, None] if task.images.ndim == 4 else task.images)
    y = torch.as_tensor(task.y)
    age = torch.as_tensor(task.table["age"].to_numpy(np.float32))
    split = subject_split(task.subjects, task.y, test_size=0.2, n_folds=3, seed=0)
    index = {s: i for i, s in enumerate(task.subjects)}
    print(f"{source}; {np.bincount(task.y).tolist()} subjects per class; validation folds of the training pool "
          f"only (chance {1 / len(task.class_names):.2f})")
    configs = {name: json.loads(text) for name, text in args.variant}
    ae_z = autoencoder_z(task, args.data) if any(cfg.get("ae") for cfg in configs.values()) else None
    masks = tumour_masks(task) if any(cfg.get("aux") for cfg in configs.values()) else None
    for name, cfg in configs.items():
        scores = []
        for seed, fold in ((s, f) for s in args.seeds for f in range(split.n_folds)):
            train, val = (np.array([index[s] for s in part]) for part in split.fold(fold))
            t0 = time.perf_counter()
            bacc, recall = fold_score(cfg, images, y, age, train, val, seed + fold, ae_z, masks)
            scores.append(bacc)
            print(f"  {name} seed {seed} fold {fold}: {bacc:.3f} (recall per class {np.round(recall, 2).tolist()}, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"{name}: validation balanced accuracy {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f}", flush=True)


if __name__ == "__main__":
    main()
