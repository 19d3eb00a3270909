"""Defining properties of the patch individual filter layer and the two classifiers."""

from __future__ import annotations

import math

import pytest
import torch

from nbutils.classify.models import BaselineCNN, PIFNet, conv_block, count_parameters
from nbutils.classify.pif import PatchIndividualFilters3d, patch_grid

SHAPE = (7, 8, 9)  # not divisible by the patch size 4: exercises the padding


def _layer(**kw) -> PatchIndividualFilters3d:
    torch.manual_seed(0)
    layer = PatchIndividualFilters3d(3, 5, SHAPE, patch_size=4, **kw)
    return layer.eval()


def test_grid_and_output_shape_with_padding():
    layer = _layer()
    assert layer.grids == [(2, 2, 3)]
    assert layer.n_patches == 12
    y = layer(torch.randn(2, 3, *SHAPE))
    assert y.shape == (2, 5, *SHAPE)  # padded internally, cropped back


def test_per_patch_output_shape():
    layer = _layer(reassemble=False)
    y = layer(torch.randn(2, 3, *SHAPE))
    assert y.shape == (2, 12, 5, 4, 4, 4)
    assert layer.n_output_features == 12 * 5 * 64


@pytest.mark.parametrize("train_mode", [False, True])
def test_change_inside_one_patch_changes_only_that_patch(rng, train_mode):
    layer = _layer()
    layer.train(train_mode)
    x = torch.as_tensor(rng.normal(size=(2, 3, *SHAPE)), dtype=torch.float32)
    y0 = layer(x)
    x2 = x.clone()
    # patch (1, 0, 2) covers voxels [4:8, 0:4, 8:12] -> clipped to the input [4:7, 0:4, 8:9]
    x2[:, :, 5, 1, 8] += 10.0
    y1 = layer(x2)
    changed = (y1 - y0).abs().amax(dim=(0, 1)) > 1e-6
    inside = torch.zeros(SHAPE, dtype=torch.bool)
    inside[4:7, 0:4, 8:9] = True
    assert changed.any()
    assert not changed[~inside].any()


def test_parameter_count_is_patches_times_one_block():
    layer = _layer()
    one = PatchIndividualFilters3d(3, 5, (4, 4, 4), patch_size=4)  # a single patch
    assert one.n_patches == 1
    block = conv_block(3, 5, pool=False)
    assert count_parameters(one) == count_parameters(block)
    assert count_parameters(layer) == 12 * count_parameters(block)
    no_bn = PatchIndividualFilters3d(3, 5, SHAPE, patch_size=4, batch_norm=False)
    assert count_parameters(no_bn) == 12 * count_parameters(conv_block(3, 5, pool=False, batch_norm=False))


def test_patches_do_not_share_weights(rng):
    """The same content in two different patches gives different outputs."""
    layer = PatchIndividualFilters3d(1, 2, (4, 4, 4), patch_size=2, batch_norm=False, relu=False)
    patch = torch.as_tensor(rng.normal(size=(2, 2, 2)), dtype=torch.float32)
    x = patch.repeat(2, 2, 2)[None, None]  # every patch identical
    y = layer(x)
    assert not torch.allclose(y[..., 0:2, 0:2, 0:2], y[..., 2:4, 2:4, 2:4])


def test_patch_size_equal_to_kernel_is_locally_connected(rng):
    """patch = kernel, no padding: one output voxel per patch, each with its own kernel."""
    shape, k, cin, cout = (6, 9, 3), 3, 2, 4
    layer = PatchIndividualFilters3d(cin, cout, shape, patch_size=k, kernel_size=k, padding="valid",
                                     batch_norm=False, relu=False)
    x = torch.as_tensor(rng.normal(size=(2, cin, *shape)), dtype=torch.float32)
    y = layer(x)
    assert y.shape == (2, cout, 2, 3, 1)
    w = layer.conv.weight.view(2, 3, 1, cout, cin, k, k, k)  # (grid..., out, in, kernel)
    b = layer.conv.bias.view(2, 3, 1, cout)
    expected = torch.empty_like(y)
    for i in range(2):
        for j in range(3):
            block = x[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k, 0:k]
            expected[:, :, i, j, 0] = torch.einsum("bcxyz,ocxyz->bo", block, w[i, j, 0]) + b[i, j, 0]
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_overlapping_grid(rng):
    layer = PatchIndividualFilters3d(3, 5, SHAPE, patch_size=4, overlap=True).eval()
    # second grid shifted by 2: ceil((7+2)/4)=3, ceil((8+2)/4)=3, ceil((9+2)/4)=3
    assert layer.grids == [(2, 2, 3), (3, 3, 3)]
    assert count_parameters(layer) == (12 + 27) * count_parameters(conv_block(3, 5, pool=False))
    x = torch.as_tensor(rng.normal(size=(1, 3, *SHAPE)), dtype=torch.float32)
    y = layer(x)
    assert y.shape == (1, 10, *SHAPE)
    x2 = x.clone()
    x2[..., 3, 3, 3] += 10.0  # near the first grid's border: second grid patch [2:6]^3
    diff = (layer(x2) - y).abs().amax(dim=0) > 1e-6
    assert not diff[5:][..., 6:, :, :].any()  # second grid: outside [2:6) unchanged
    assert diff[5:, 2:6, 2:6, 2:6].any()


def test_wrong_input_shape_is_rejected():
    with pytest.raises(ValueError, match="expects"):
        _layer()(torch.randn(1, 3, 8, 8, 8))


def test_patch_grid_helper():
    assert patch_grid((10, 13, 10), 5) == (2, 3, 2)
    assert patch_grid((7, 8, 9), (4, 4, 4), offset=2) == (3, 3, 3)


def test_baseline_shapes(rng):
    x = torch.as_tensor(rng.normal(size=(3, 1, 17, 20, 23)), dtype=torch.float32)
    model = BaselineCNN(n_classes=4, channels=(2, 4, 8)).eval()
    assert model(x).shape == (3, 4)
    assert len(model.features) == 3
    assert model.features[0][0].kernel_size == (3, 3, 3)
    assert isinstance(model.features[0][-1], torch.nn.MaxPool3d)
    model2d = BaselineCNN(n_classes=3, channels=(2, 4), spatial_dims=2).eval()
    assert model2d(x[:, :, 0]).shape == (3, 3)


def test_baseline_max_pooling_sees_a_local_finding_that_averaging_dilutes():
    shape = (16, 16, 16)
    models = {p: BaselineCNN(n_classes=2, channels=(2,), pooling=p).eval() for p in ("avg", "max")}
    for m in models.values():  # one feature map that is 1 where the input is positive
        torch.nn.init.ones_(m.features[0][0].weight)
    x = torch.zeros(2, 1, *shape)
    x[1, 0, 5, 5, 5] = 1.0  # a one-voxel "lesion"
    pooled = {p: m.head[0](m.features(x)).flatten(1) for p, m in models.items()}
    assert torch.all(pooled["max"][1] > pooled["max"][0] + 0.1)  # the lesion sets the maximum ...
    assert torch.all(pooled["avg"][1] - pooled["avg"][0] < pooled["max"][1] - pooled["max"][0])  # ... and is diluted
    with pytest.raises(ValueError, match="pooling"):
        BaselineCNN(pooling="median")


def test_pifnet_shapes_and_locality(rng):
    shape = (17, 20, 23)
    model = PIFNet(shape, n_classes=2, channels=(2, 4, 4, 8), pif_channels=3, patch_size=2).eval()
    assert model.pif_input_shape == (2, 2, 2)
    assert model.pif.n_patches == 1
    x = torch.as_tensor(rng.normal(size=(2, 1, *shape)), dtype=torch.float32)
    assert model(x).shape == (2, 2)
    bigger = PIFNet((32, 40, 24), channels=(2, 2, 2, 2), pif_channels=3, patch_size=2)
    assert bigger.pif.grids == [(2, 3, 2)]
    assert bigger.head[2].in_features == 12 * 3
    assert count_parameters(bigger.pif) == 12 * count_parameters(conv_block(2, 3, pool=False))
    assert math.prod(bigger.pif_input_shape) == 4 * 5 * 3


@pytest.mark.parametrize("kind", ["baseline3d", "baseline2d", "pif"])
def test_networks_run_channels_last_with_the_same_outputs_and_state_dicts(rng, kind):
    from nbutils.classify.models import CHANNELS_LAST

    shape = (17, 20, 23)
    make = {"baseline3d": lambda: BaselineCNN(n_classes=3, channels=(2, 4), voxel_norm=True, input_shape=shape),
            "baseline2d": lambda: BaselineCNN(n_classes=3, channels=(2, 4), spatial_dims=2),
            "pif": lambda: PIFNet(shape, n_classes=3, channels=(2, 4, 4, 8), pif_channels=3, patch_size=2,
                                  voxel_norm=True)}[kind]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.as_tensor(rng.normal(size=(2, 1, *shape)), dtype=torch.float32)
    if kind == "baseline2d":
        x = x[..., 0]
    layout = CHANNELS_LAST[x.ndim - 2]
    conv = model.features[1][0].weight  # (4, 2, 3, 3[, 3]): the first (one input channel) is both layouts
    assert conv.is_contiguous(memory_format=layout) and not conv.is_contiguous()
    features = model.features(x)
    assert features.is_contiguous(memory_format=layout)  # the layout carries through the blocks
    reference = make().eval().to(memory_format=torch.contiguous_format)  # the same initial weights, contiguous
    torch.manual_seed(0)
    reference.load_state_dict(make().state_dict())
    assert all(p.is_contiguous() for p in reference.parameters())
    assert torch.allclose(model(x), reference(x), atol=1e-5)  # the layout is not the maths
    model.load_state_dict({k: v.contiguous() for k, v in reference.state_dict().items()})
    assert model.features[1][0].weight.is_contiguous(memory_format=layout)  # loading keeps the layout
    assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_voxel_standardise_uses_training_statistics_floors_the_sd_and_clips(rng):
    from nbutils.classify.models import VoxelStandardise

    shape = (7, 8, 9)
    train = torch.as_tensor(rng.normal(2.0, 3.0, size=(20, 1, *shape)), dtype=torch.float32)
    train[:, :, 0] = 0.0  # background: no variation at all
    norm = VoxelStandardise(shape, clip=4.0)
    x = torch.full((1, 1, *shape), 100.0)
    assert torch.equal(norm(torch.zeros(1, 1, *shape)), torch.zeros(1, 1, *shape).clamp(-4, 4))  # identity-ish
    norm.fit(train)
    torch.testing.assert_close(norm(train.mean(0, keepdim=True)), torch.zeros(1, 1, *shape))
    assert float(norm.scale[0, 0, 0].min()) > 0  # constant voxels get the floor, not 0
    assert float(norm(x).max()) == 4.0  # clipped
    with pytest.raises(ValueError, match="expected images"):
        norm.fit(train[:, :, :3])
    model = BaselineCNN(n_classes=2, channels=(2,), voxel_norm=True, input_shape=shape)
    assert model(train[:2]).shape == (2, 2)
    assert "input_norm.mean" in model.state_dict()  # saved with the weights
    with pytest.raises(ValueError, match="input shape"):
        BaselineCNN(voxel_norm=True)
