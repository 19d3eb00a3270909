"""Tests of the skip-free autoencoder, the data module, training and checkpoint loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from nbutils.normative.data import NormativeDataModule, VolumeDataset, assign_splits, load_volume
from nbutils.normative.model import ConvAutoencoder, NormativeAutoencoder, reconstruct, ssim_3d

SHAPE = (16, 24, 16)


def test_autoencoder_shapes_unequal_grid():
    ae = ConvAutoencoder(channels=(4, 8, 8), latent_channels=3)
    x = torch.randn(2, 1, *SHAPE)
    assert ae(x).shape == x.shape
    assert ae.encode(x).shape == (2, 3, 2, 3, 2)


def test_autoencoder_rejects_indivisible_shape():
    ae = ConvAutoencoder(channels=(4, 8, 8))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*3=8"):
        ae(torch.zeros(1, 1, 12, 16, 16))


def test_output_depends_on_input_only_through_bottleneck():
    """Swapping the latent swaps the output: no skip connection carries the input around it."""
    torch.manual_seed(0)
    ae = ConvAutoencoder(channels=(4, 8), latent_channels=2, norm="none").eval()
    a, b = torch.randn(1, 1, *SHAPE), torch.randn(1, 1, *SHAPE)
    with torch.no_grad():
        za = ae.encode(a)
        # decoding a's latent gives a's output, whatever image we started from
        assert torch.allclose(ae.decode(za), ae(a))
        zero = ae.decode(torch.zeros_like(za))
        assert not torch.allclose(ae(a), ae(b))
        # zeroing the latent destroys the output: the same constant map for any input
        handle = ae.to_latent.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        out_a, out_b = ae(a), ae(b)
        handle.remove()
    assert torch.allclose(out_a, out_b) and torch.allclose(out_a, zero)
    assert not any("skip" in n.lower() for n, _ in ae.named_modules())


def test_full_resolution_head_keeps_shape_and_bottleneck():
    torch.manual_seed(0)
    ae = ConvAutoencoder(channels=(4, 8), latent_channels=2, head_channels=3, norm="none").eval()
    a, b = torch.randn(1, 1, *SHAPE), torch.randn(1, 1, *SHAPE)
    assert ae(a).shape == a.shape
    # full-resolution feature maps exist in the head ...
    convs = [m for m in ae.head.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [3, 1]
    # ... but the output still depends on the input only through the latent
    with torch.no_grad():
        handle = ae.to_latent.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
        out_a, out_b = ae(a), ae(b)
        handle.remove()
    assert torch.allclose(out_a, out_b)
    with pytest.raises(ValueError, match="head_channels"):
        ConvAutoencoder(channels=(4,), head_channels=-1)


def test_ssim_3d_matches_monai_uniform_window():
    from monai.metrics import SSIMMetric

    torch.manual_seed(0)
    x = torch.rand(2, 1, 11, 13, 9) * 4
    y = x + 0.3 * torch.randn_like(x)
    ours = ssim_3d(x, y, data_range=8.0, window=5)
    ref = SSIMMetric(spatial_dims=3, data_range=8.0, win_size=5, kernel_type="uniform")(x, y).mean()
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.isclose(ssim_3d(x, x, 8.0, 5), torch.tensor(1.0))
    assert ssim_3d(x, y + 0.5 * torch.randn_like(x), 8.0, 5) < ours


def test_ssim_loss_term_is_added_and_zero_for_a_perfect_copy():
    torch.manual_seed(0)
    x = torch.randn(2, 1, *SHAPE)
    batch = {"image": x, "mask": torch.ones_like(x)}
    plain = NormativeAutoencoder(channels=(4, 8), latent_channels=2)
    with_ssim = NormativeAutoencoder(channels=(4, 8), latent_channels=2, ssim_weight=0.5)
    with_ssim.load_state_dict(plain.state_dict())
    y = plain(x)
    r = with_ssim.hparams.ssim_range
    expected = plain.loss(batch) + 0.5 * (1 - ssim_3d(y + r / 2, x + r / 2, r, 7))
    assert torch.allclose(with_ssim.loss(batch), expected, atol=1e-6)
    assert with_ssim.loss(batch) > plain.loss(batch)


def test_denoising_batch_reconstructs_the_clean_image_from_the_input():
    torch.manual_seed(0)
    net = NormativeAutoencoder(channels=(4, 8), latent_channels=2, masked_loss=False)
    x = torch.randn(1, 1, *SHAPE)
    noisy = x + 1.0
    loss = net.loss({"image": x, "input": noisy})
    assert torch.isclose(loss, (net(noisy) - x).abs().mean())
    assert not torch.isclose(loss, net.loss({"image": x}))


def test_reconstruct_single_and_stack():
    ae = ConvAutoencoder(channels=(4, 8), latent_channels=2)
    vols = np.random.default_rng(0).normal(size=(3, *SHAPE)).astype(np.float32)
    stack = reconstruct(ae, vols, batch_size=2)
    assert stack.shape == vols.shape and stack.dtype == np.float32
    np.testing.assert_allclose(reconstruct(ae, vols[1]), stack[1], atol=1e-5)


def _table(n_cn=10, n_ad=3):
    ids = [f"sub-{i:03d}" for i in range(n_cn + n_ad)]
    return pd.DataFrame({
        "participant_id": ids + ids[:2],  # two subjects have a second session
        "path": [f"/x/{i}.nii.gz" for i in range(n_cn + n_ad + 2)],
        "diagnosis": ["CN"] * n_cn + ["AD"] * n_ad + ["CN", "CN"],
    })  # fmt: skip


def test_assign_splits_by_subject_healthy_only():
    t = assign_splits(_table(), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert set(t.loc[t.diagnosis == "AD", "split"]) == {"test"}
    per_subject = t.groupby("participant_id")["split"].nunique()
    assert (per_subject == 1).all()  # sessions never straddle splits
    cn = t[t.diagnosis == "CN"].drop_duplicates("participant_id")
    assert cn["split"].value_counts().to_dict() == {"train": 6, "val": 2, "test": 2}
    # a fixed test_seed keeps the test set while the reference scans are re-drawn
    a = assign_splits(_table(), seed=1, test_seed=0)
    b = assign_splits(_table(), seed=2, test_seed=0)
    assert (a.split == "test").equals(b.split == "test")
    assert not a.split.equals(b.split)


def test_assign_splits_errors():
    with pytest.raises(ValueError, match="at least 3 healthy"):
        assign_splits(_table(n_cn=2))
    with pytest.raises(ValueError, match="must be in"):
        assign_splits(_table(), val_fraction=0.6, test_fraction=0.5)


def test_load_volume_errors(tmp_path):
    p = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), p)
    with pytest.raises(ValueError, match="v.nii.gz: shape"):
        load_volume(p, (4, 5, 7))
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        load_volume(tmp_path / "missing.nii")


def test_volume_dataset_augments_inside_mask_only():
    torch.manual_seed(0)
    vols = np.ones((2, *SHAPE), np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[4:12, 4:20, 4:12] = True
    ds = VolumeDataset(vols, mask, augment_scale=0.1, augment_shift=0.1)
    item = ds[0]
    x = item["image"][0].numpy()
    assert item["image"].shape == (1, *SHAPE) and item["mask"].shape == (1, *SHAPE)
    assert np.all(x[~mask] == 1.0) and not np.allclose(x[mask], 1.0)


def test_volume_dataset_coarse_noise_inside_mask_only_and_smooth():
    torch.manual_seed(0)
    vols = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[2:14, 3:21, 2:14] = True
    ds = VolumeDataset(vols, mask, noise_std=1.0, noise_factor=4)
    item = ds[1]
    noise = (item["input"] - item["image"])[0].numpy()
    np.testing.assert_array_equal(item["image"][0].numpy(), vols[1])  # the target stays clean
    assert np.all(noise[~mask] == 0) and noise[mask].std() > 0.1
    # coarse: neighbouring voxels' noise is strongly correlated (white noise would give ~0)
    inner = mask[:-1] & mask[1:]
    r = np.corrcoef(noise[:-1][inner], noise[1:][inner])[0, 1]
    assert r > 0.8
    assert "input" not in VolumeDataset(vols, mask)[0]
    with pytest.raises(ValueError, match="noise_std"):
        VolumeDataset(vols, mask, noise_std=-1.0)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    """Ten tiny 'healthy' scans (smooth blobs + noise) and three patients, with a table."""
    out = tmp_path_factory.mktemp("normative")
    rng = np.random.default_rng(0)
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:13, 4:20, 3:13] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), out / "mask.nii.gz")
    rows = []
    for i in range(13):
        v = (rng.normal(size=SHAPE) * 0.3 + 1.0) * mask
        p = out / f"sub-{i:02d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(v.astype(np.float32), np.eye(4)), p)
        rows.append({"participant_id": f"sub-{i:02d}", "path": str(p),
                     "diagnosis": "CN" if i < 10 else "AD"})
    pd.DataFrame(rows).to_csv(out / "subjects.tsv", sep="\t", index=False)
    return out


def test_datamodule_uses_healthy_only(fixture_dir):
    dm = NormativeDataModule(fixture_dir / "subjects.tsv", mask=fixture_dir / "mask.nii.gz",
                             batch_size=2, split_seed=0)
    dm.setup("fit")
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2
    assert set(dm.rows("train").diagnosis) == {"CN"}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, *SHAPE)


TINY = {"channels": [4, 8], "latent_channels": 2}


def test_train_and_weights_only_checkpoint_roundtrip(fixture_dir, tmp_path):
    from nbutils.normative.train import load_autoencoder, read_learning_curve, train_autoencoder

    data = {"mask": str(fixture_dir / "mask.nii.gz"), "batch_size": 2}
    res = train_autoencoder(fixture_dir / "subjects.tsv", tmp_path / "m", model=TINY, data=data,
                            max_epochs=2, seed=1, progress=False)
    assert res.best_checkpoint.exists() and res.last_checkpoint.exists()
    assert res.epochs == 2 and np.isfinite(res.best_val_loss)
    assert not (tmp_path / "m" / ".training").exists()
    curve = read_learning_curve(res.metrics_csv)
    assert list(curve.epoch) == [0, 1] and curve.val_loss.notna().all()
    # plain types only: torch.load with weights_only=True accepts the file
    raw = torch.load(res.best_checkpoint, weights_only=True)
    assert raw["hyper_parameters"]["channels"] == [4, 8]
    model = load_autoencoder(res.best_checkpoint)
    assert isinstance(model, NormativeAutoencoder) and not model.training
    x = torch.randn(1, 1, *SHAPE)
    ref = NormativeAutoencoder(**TINY)
    ref.load_state_dict(raw["state_dict"])
    ref.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x))
    subjects = pd.read_csv(tmp_path / "m" / "subjects.tsv", sep="\t")
    assert set(subjects.split) == {"train", "val", "test"}


def test_load_autoencoder_rejects_other_files(tmp_path):
    from nbutils.normative.train import load_autoencoder

    p = tmp_path / "x.ckpt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(ValueError, match="not a NormativeAutoencoder checkpoint"):
        load_autoencoder(p)


@pytest.mark.slow
def test_ddp_two_cpu_processes(fixture_dir, tmp_path):
    """The real 'ddp' strategy: Lightning re-launches the training script on 2 CPU processes."""
    import json

    data = json.dumps({"mask": str(fixture_dir / "mask.nii.gz"), "batch_size": 2})
    cmd = [sys.executable, "-m", "nbutils.normative.train", "--table",
           str(fixture_dir / "subjects.tsv"), "--out", str(tmp_path / "ddp"),
           "--model", json.dumps(TINY), "--data", data, "--max-epochs", "1",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    out = Path(tmp_path / "ddp")
    assert (out / "checkpoints" / "best.ckpt").exists()
    summary = json.loads((out / "training.json").read_text())
    assert summary["strategy"] == "ddp" and summary["devices"] == 2


def test_assign_folds_gives_every_reference_subject_one_fold_and_keeps_the_test_set():
    from nbutils.normative.data import assign_folds, fold_table

    t = assign_splits(_table(n_cn=12), seed=0)
    f = assign_folds(t, 3, seed=0)
    ref = f.split != "test"
    assert (f.split == "test").equals(t.split == "test")
    assert (f.loc[~ref, "fold"] == -1).all()
    counts = f.loc[ref].drop_duplicates("participant_id")["fold"].value_counts()
    assert sorted(counts.index) == [0, 1, 2] and counts.max() - counts.min() <= 1
    assert (f.groupby("participant_id")["fold"].nunique() == 1).all()
    for k in range(3):
        m = fold_table(f, k)
        assert set(m.loc[m.fold == k, "split"]) == {"val"}
        assert set(m.loc[(m.fold >= 0) & (m.fold != k), "split"]) == {"train"}
    assert not assign_folds(t, 3, seed=1)["fold"].equals(f["fold"])
    with pytest.raises(ValueError, match="n_folds >= 2"):
        assign_folds(t, 1)


def test_balanced_order_samples_strata_proportionally():
    from nbutils.normative.data import balanced_order

    strata = np.array(["a"] * 30 + ["b"] * 15 + ["c"] * 5)
    order = balanced_order(strata, np.random.default_rng(0))
    assert sorted(order) == list(range(50))
    first10 = strata[order[:10]]
    assert (first10 == "a").sum() == 6 and (first10 == "b").sum() == 3 and (first10 == "c").sum() == 1
    again = balanced_order(strata, np.random.default_rng(0))
    assert np.array_equal(order, again)


def test_assign_splits_reference_covers_every_site():
    rng = np.random.default_rng(4)
    n = 30
    t = pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)],
        "path": [f"/x/{i}.nii.gz" for i in range(n)],
        "diagnosis": "CN",
        "site": ["A"] * 18 + ["B"] * 9 + ["C"] * 3,
        "age": rng.uniform(20, 90, n),
    })  # fmt: skip
    def proportional(drawn, pool):  # every site gets the floor or ceiling of its share
        share = pool["site"].value_counts() * len(drawn) / len(pool)
        counts = drawn["site"].value_counts().reindex(share.index, fill_value=0)
        return bool(((counts - share).abs() < 1).all())

    for seed in range(5):
        for stratify in (("site",), ("site", "age")):
            s = assign_splits(t, val_fraction=0.2, test_fraction=0.2, seed=seed, stratify=stratify)
            test, rest = s[s.split == "test"], s[s.split != "test"]
            if stratify == ("site",):
                assert proportional(test, s) and proportional(rest[rest.split == "val"], rest)
            else:  # strata are site x age tertile: each site stays close to its share
                share = s["site"].value_counts() * len(test) / len(s)
                assert ((test["site"].value_counts().reindex(share.index, fill_value=0) - share).abs() < 2).all()
    plain = [assign_splits(t, seed=s, stratify=())["split"] for s in range(5)]
    assert any(not p.equals(plain[0]) for p in plain[1:])


def test_build_normative_model_cross_fits_an_ensemble_with_a_conditional_reference(fixture_dir, tmp_path):
    from nbutils.normative.model import EnsembleAutoencoder
    from nbutils.normative.pipeline import build_normative_model, deviation_maps
    from nbutils.normative.stats import load_stats
    from nbutils.normative.train import load_autoencoder

    table = pd.read_csv(fixture_dir / "subjects.tsv", sep="\t")
    rng = np.random.default_rng(5)
    table = table.assign(age=rng.uniform(20, 80, len(table)), sex=rng.choice(["F", "M"], len(table)),
                         site=rng.choice(["a", "b"], len(table)))
    table = assign_splits(table, 0.2, 0.2, seed=0)
    labels = np.zeros(SHAPE, np.int32)
    labels[3:8, 4:20, 3:13], labels[8:13, 4:20, 3:13] = 1, 2
    regions = pd.DataFrame({"index": [1, 2], "name": ["left", "right"], "hemisphere": ["L", "R"]})
    result, stats, model = build_normative_model(
        table, tmp_path / "ens", n_folds=2, model=TINY,
        data={"mask": str(fixture_dir / "mask.nii.gz"), "batch_size": 2}, max_epochs=1, seed=0,
        stats_options={"atlas_data": (labels, regions), "min_region_voxels": 2}, progress=False,
    )  # fmt: skip
    assert isinstance(model, EnsembleAutoencoder) and len(model.members) == 2
    n_ref = table.loc[table.split != "test", "participant_id"].nunique()
    assert stats.provenance["n_reference"] == n_ref == 8  # every non-test healthy subject
    assert stats.conditional and stats.regional_model is None  # too few subjects for PCNtoolkit
    subjects = pd.read_csv(tmp_path / "ens" / "subjects.tsv", sep="\t")
    assert set(subjects.loc[subjects.split != "test", "fold"]) == {0, 1}
    loaded = load_autoencoder(result.best_checkpoint)
    assert isinstance(loaded, EnsembleAutoencoder) and len(loaded.members) == 2
    back = load_stats(result.best_checkpoint)
    np.testing.assert_array_equal(back.conditional_residual.mean_coef, stats.conditional_residual.mean_coef)
    vols = np.stack([nib.load(p).get_fdata(dtype=np.float32) for p in table.path[:2]])
    cov = table[["age", "sex", "site"]].head(2)
    _, z_a = deviation_maps(model, stats, vols, cov)
    _, z_b = deviation_maps(loaded, back, vols, cov)
    np.testing.assert_allclose(z_a, z_b, atol=1e-5)
    assert not result.reused and (tmp_path / "ens" / "build_key.json").is_file()

    def again(**changes):
        options = dict(n_folds=2, model=TINY, data={"mask": str(fixture_dir / "mask.nii.gz"), "batch_size": 2},
                       max_epochs=1, seed=0, progress=False, reuse=True,
                       stats_options={"atlas_data": (labels, regions), "min_region_voxels": 2})
        return build_normative_model(table, tmp_path / "ens", **{**options, **changes})

    same, same_stats, same_model = again()  # same scans, settings and seed: loaded, not trained
    assert same.reused and same.epochs == result.epochs and len(same.members) == 2
    np.testing.assert_allclose(deviation_maps(same_model, same_stats, vols, cov)[1], z_a, atol=1e-5)
    assert not again(seed=1)[0].reused  # another seed trains again
    assert not again(seed=1, reuse=False)[0].reused  # and reuse=False always trains
