"""BN-Inception, the backbone of the TSN models whose features RU-LSTM uses.

Architecture: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift" (ICML 2015), as released in Caffe and used by Temporal
Segment Networks (Wang et al., ECCV 2016). Written for this project from the published
description; the parameter names are those of the Caffe model as the TSN PyTorch checkpoints
store them (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``, ...,
``inception_5b_pool_proj_bn``), so that a TSN ``state_dict`` (after dropping its
``module.base_model.`` prefix and ``new_fc`` head) loads strictly.

Every convolution has a bias and is followed by BatchNorm (eps 1e-5, affine, as the Caffe
model) and ReLU. Stem: 7x7/2 convolution, 3x3/2 max pool, 1x1 and 3x3 convolutions, 3x3/2
max pool. Ten Inception blocks: each concatenates a 1x1 branch, a 1x1 -> 3x3 branch, a
1x1 -> 3x3 -> 3x3 branch and a pooled branch (3x3 pool -> 1x1 projection); the reduction
blocks 3c and 4e have no 1x1 branch, stride 2 in their 3x3 branches and a bare 3x3/2 max pool.
Pools use Caffe's ceiling rounding (``ceil_mode``); the pooled branches average with padding
counted, except 5b which takes the maximum. The output is the global average of the last
block: a 1024-d vector.

Input sizes: the branches of a block must agree in size, which fails for some widths and
heights (456 columns, for example; the reference resizes to 256 x 454). Each side must be
``32 * m - 1`` to ``32 * m + 6`` for some ``m >= 1`` (31 to 38, 63 to 70, ..., 256, 454);
:func:`check_input_size` tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

FEATURE_DIM = 1024
BN_EPS = 1e-5


@dataclass(frozen=True)
class InceptionSpec:
    """Output channels of one Inception block's branches (0: no such branch)."""

    name: str
    one: int  # 1x1 branch
    reduce3: int  # 1x1 before the 3x3 branch
    three: int  # 3x3 branch
    reduce_double: int  # 1x1 before the double 3x3 branch
    double: int  # both 3x3 of the double branch
    pool: Literal["avg", "max"]
    pool_proj: int  # 1x1 after the pool (0: the pooled input is passed through)
    stride: int = 1


# Channel counts of BN-Inception (Ioffe & Szegedy 2015, Figure 5 / the Caffe prototxt).
BLOCKS: tuple[InceptionSpec, ...] = (
    InceptionSpec("inception_3a", 64, 64, 64, 64, 96, "avg", 32),
    InceptionSpec("inception_3b", 64, 64, 96, 64, 96, "avg", 64),
    InceptionSpec("inception_3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    InceptionSpec("inception_4a", 224, 64, 96, 96, 128, "avg", 128),
    InceptionSpec("inception_4b", 192, 96, 128, 96, 128, "avg", 128),
    InceptionSpec("inception_4c", 160, 128, 160, 128, 160, "avg", 128),
    InceptionSpec("inception_4d", 96, 128, 192, 160, 192, "avg", 128),
    InceptionSpec("inception_4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    InceptionSpec("inception_5a", 352, 192, 320, 160, 224, "avg", 128),
    InceptionSpec("inception_5b", 352, 192, 320, 192, 224, "max", 128),
)


class BNInception(nn.Module):
    """BN-Inception feature extractor: (B, in_channels, H, W) float -> (B, 1024) float.

    Args:
        in_channels: 3 for RGB, 10 for a TSN flow stack of five (u, v) pairs.

    The input is used as given (the TSN normalisation is the caller's: see
    :mod:`feature_extraction.tsn`). Raises ``ValueError`` for an input size whose branches
    disagree (see the module docstring).
    """

    def __init__(self, *, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.feature_dim = FEATURE_DIM
        self._unit("conv1_7x7_s2", in_channels, 64, kernel=7, stride=2)
        self._unit("conv2_3x3_reduce", 64, 64, kernel=1)
        self._unit("conv2_3x3", 64, 192, kernel=3)
        channels = 192
        for spec in BLOCKS:
            channels = self._block(spec, channels)
        assert channels == FEATURE_DIM

    def _unit(self, name: str, cin: int, cout: int, *, kernel: int, stride: int = 1) -> None:
        conv = nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=kernel // 2)
        bn = nn.BatchNorm2d(cout, eps=BN_EPS, affine=True)
        self.add_module(name, conv)
        self.add_module(f"{name}_bn", bn)

    def _apply_unit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Convolution ``name`` -> its BatchNorm ``name_bn`` -> ReLU."""
        return torch.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def _block(self, spec: InceptionSpec, cin: int) -> int:
        n = spec.name
        if spec.one:
            self._unit(f"{n}_1x1", cin, spec.one, kernel=1)
        self._unit(f"{n}_3x3_reduce", cin, spec.reduce3, kernel=1)
        self._unit(f"{n}_3x3", spec.reduce3, spec.three, kernel=3, stride=spec.stride)
        self._unit(f"{n}_double_3x3_reduce", cin, spec.reduce_double, kernel=1)
        self._unit(f"{n}_double_3x3_1", spec.reduce_double, spec.double, kernel=3)
        self._unit(f"{n}_double_3x3_2", spec.double, spec.double, kernel=3, stride=spec.stride)
        if spec.pool_proj:
            self._unit(f"{n}_pool_proj", cin, spec.pool_proj, kernel=1)
        return spec.one + spec.three + spec.double + (spec.pool_proj or cin)

    def _run_block(self, spec: InceptionSpec, x: torch.Tensor) -> torch.Tensor:
        n, unit = spec.name, self._apply_unit
        branches = []
        if spec.one:
            branches.append(unit(f"{n}_1x1", x))
        branches.append(unit(f"{n}_3x3", unit(f"{n}_3x3_reduce", x)))
        double = unit(f"{n}_double_3x3_1", unit(f"{n}_double_3x3_reduce", x))
        branches.append(unit(f"{n}_double_3x3_2", double))
        if spec.stride == 2:
            pooled = nn.functional.max_pool2d(x, 3, stride=2, ceil_mode=True)
        elif spec.pool == "max":
            pooled = nn.functional.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
        else:
            pooled = nn.functional.avg_pool2d(
                x, 3, stride=1, padding=1, ceil_mode=True, count_include_pad=True
            )
        branches.append(unit(f"{n}_pool_proj", pooled) if spec.pool_proj else pooled)
        sizes = {tuple(b.shape[-2:]) for b in branches}
        if len(sizes) > 1:
            raise ValueError(
                f"BNInception: the branches of {n} disagree in size {sorted(sizes)}; the input "
                "size does not suit the network (the reference resizes frames to 256 x 454)"
            )
        return torch.cat(branches, dim=1)  # (B, sum of branch channels, h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last block's map (B, 1024, h, w)."""
        unit = self._apply_unit
        x = unit("conv1_7x7_s2", x)
        x = nn.functional.max_pool2d(x, 3, stride=2, ceil_mode=True)
        x = unit("conv2_3x3", unit("conv2_3x3_reduce", x))
        x = nn.functional.max_pool2d(x, 3, stride=2, ceil_mode=True)
        for spec in BLOCKS:
            x = self._run_block(spec, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1024): global average pool of the last block."""
        return self.forward_features(x).mean(dim=(2, 3))  # (B, 1024, h, w) -> (B, 1024)


def _pooled(size: int, *, kernel: int = 3, stride: int = 2, padding: int = 0) -> int:
    """Output length of a ceil-mode pool (PyTorch's rule: the last window starts inside)."""
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _conv(size: int, *, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def check_input_size(height: int, width: int) -> bool:
    """Whether BNInception takes (height, width) inputs (the branches of 3c and 4e agree)."""
    for size in (height, width):
        s = size
        for step in (lambda n: _conv(n, kernel=7, stride=2), _pooled, _pooled):
            s = step(s)
            if s < 1:
                return False
        for _ in range(2):  # reduction blocks 3c and 4e: 3x3/2 conv vs 3x3/2 ceil max pool
            if _pooled(s) < 1 or _conv(s, kernel=3, stride=2) != _pooled(s):
                return False
            s = _pooled(s)
    return True
