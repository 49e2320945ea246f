"""bf16 autocast of the fast unrolling path: outputs within tolerance of float32, the cell
state kept in float32, gradients that agree with float32 (tiny shapes, random weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rulstm.models import RULSTM, RULSTMFusion

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def _relative_error(low: torch.Tensor, ref: torch.Tensor) -> float:
    return ((low.float() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("sequence_completion", [False, True])
@pytest.mark.parametrize("unroll", ["parallel", "sequential"])
def test_branch_under_bf16_autocast_matches_float32(depth, sequence_completion, unroll):
    torch.manual_seed(0)
    net = RULSTM(num_classes=30, feat_dim=24, hidden=32, depth=depth, unroll=unroll).eval()
    x = torch.randn(5, 14, 24)
    ref = net(x, sequence_completion=sequence_completion, last_steps=8)
    with torch.autocast(**BF16):
        low = net(x, sequence_completion=sequence_completion, last_steps=8)
    assert low.dtype == torch.bfloat16
    assert _relative_error(low, ref) < 0.03
    # The ranking is what the metrics read: top-5 sets agree almost everywhere.
    top_ref, top_low = ref.topk(5, -1).indices, low.float().topk(5, -1).indices
    agree = (top_ref.sort(-1).values == top_low.sort(-1).values).all(-1).float().mean()
    assert agree >= 0.9


def test_parallel_and_sequential_agree_under_autocast():
    torch.manual_seed(1)
    net = RULSTM(num_classes=20, feat_dim=16, hidden=24).eval()
    x = torch.randn(3, 14, 16)
    with torch.autocast(**BF16):
        fast = net(x, last_steps=8)
        net.unroll_mode = "sequential"
        slow = net(x, last_steps=8)
    assert _relative_error(fast, slow.float()) < 0.03


def test_cell_state_stays_float32_under_autocast():
    torch.manual_seed(2)
    net = RULSTM(num_classes=10, feat_dim=8, hidden=12, depth=2).eval()
    x = torch.randn(2, 8)
    with torch.autocast(**BF16):
        h, c = net.roll(x)
        h, c = net.roll(x, (h, c))
        logits = net.unroll_horizons(x, (h, c), [3, 1])
    assert h.dtype == torch.bfloat16
    assert c.dtype == torch.float32
    ref_state = net.roll(x, net.roll(x))
    assert torch.allclose(c, ref_state[1], atol=0.02)
    assert _relative_error(logits, net.unroll_horizons(x, ref_state, [3, 1])) < 0.03


def test_gradients_under_autocast_follow_float32():
    torch.manual_seed(3)
    net = RULSTM(num_classes=15, feat_dim=16, hidden=24, dropout=0.0)
    x, labels = torch.randn(6, 14, 16), torch.randint(15, (6,))

    def gradient(autocast: bool) -> torch.Tensor:
        net.zero_grad()
        with torch.autocast(**BF16, enabled=autocast):
            logits = net(x, last_steps=8)
        loss = F.cross_entropy(logits.float().reshape(-1, 15), labels.repeat_interleave(8))
        loss.backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and g.dtype == torch.float32 for g in grads)
        return torch.cat([g.flatten() for g in grads])

    ref, low = gradient(False), gradient(True)
    assert torch.isfinite(low).all()
    assert F.cosine_similarity(ref, low, dim=0) > 0.99


def test_fusion_under_autocast_matches_float32():
    torch.manual_seed(4)
    net = RULSTMFusion(num_classes=25, feat_dims={"rgb": 16, "flow": 16, "obj": 8}, hidden=24)
    net.eval()
    x = {
        "rgb": torch.randn(4, 14, 16),
        "flow": torch.randn(4, 14, 16),
        "obj": torch.randn(4, 14, 8),
    }
    ref, ref_weights = net(x, last_steps=8, return_weights=True)
    with torch.autocast(**BF16):
        low, weights = net(x, last_steps=8, return_weights=True)
    assert _relative_error(low, ref) < 0.03
    assert torch.allclose(weights.float(), ref_weights, atol=0.02)
