"""BN-Inception: the TSN layer names and channel counts, input sizes, output shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from feature_extraction.bninception import BNInception, check_input_size


@pytest.fixture(scope="module")
def rgb_net() -> BNInception:
    torch.manual_seed(0)
    return BNInception().eval()


def test_parameters_have_the_caffe_names_and_channel_counts(rgb_net: BNInception) -> None:
    state = rgb_net.state_dict()
    for key in (
        "conv1_7x7_s2.weight",
        "conv1_7x7_s2.bias",
        "conv1_7x7_s2_bn.running_var",
        "conv2_3x3_reduce_bn.weight",
        "inception_3a_double_3x3_2_bn.bias",
        "inception_3c_double_3x3_2.weight",
        "inception_5b_pool_proj_bn.running_mean",
    ):
        assert key in state, key
    # The reduction blocks have neither a 1x1 branch nor a pool projection.
    assert not any(k.startswith(("inception_3c_1x1", "inception_4e_pool_proj")) for k in state)
    convs = [m for m in rgb_net.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in rgb_net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 69
    assert all(c.bias is not None for c in convs)
    assert all(b.eps == 1e-5 and b.affine for b in bns)
    # Each block's output width is the next block's input (BN-Inception, Ioffe & Szegedy 2015).
    widths = {
        "inception_3a_1x1": 192,
        "inception_3b_1x1": 256,
        "inception_3c_3x3_reduce": 320,
        "inception_4a_1x1": 576,
        "inception_4d_1x1": 608,
        "inception_4e_3x3_reduce": 608,
        "inception_5a_1x1": 1056,
        "inception_5b_1x1": 1024,
    }
    for name, channels in widths.items():
        assert getattr(rgb_net, name).in_channels == channels, name


def test_forward_gives_the_pooled_1024_d_feature(rgb_net: BNInception) -> None:
    x = torch.randn(2, 3, 31, 38)  # the smallest sizes the branches agree on are 31..38
    with torch.no_grad():
        feature = rgb_net(x)
        spatial = rgb_net.forward_features(x)
    assert feature.shape == (2, 1024)
    torch.testing.assert_close(feature, spatial.mean(dim=(2, 3)))


def test_flow_variant_takes_ten_channels() -> None:
    flow = BNInception(in_channels=10).eval()
    assert flow.conv1_7x7_s2.weight.shape == (64, 10, 7, 7)
    with torch.no_grad():
        assert flow(torch.randn(1, 10, 33, 34)).shape == (1, 1024)


def test_input_sizes_that_do_not_fit_fail_clearly(rgb_net: BNInception) -> None:
    assert check_input_size(256, 454) and check_input_size(31, 38)
    assert not check_input_size(256, 456) and not check_input_size(30, 31)
    assert not check_input_size(39, 40)
    with torch.no_grad(), pytest.raises(ValueError, match="inception_3c.*256 x 454"):
        rgb_net(torch.zeros(1, 3, 31, 40))
