"""RULSTMFusion: MATT and average fusion, batch size 1, key errors, parallel == sequential."""

from __future__ import annotations

import pytest
import torch

from rulstm.models import RULSTM, RULSTMFusion

B, T, H, C = 3, 5, 6, 11
DIMS = {"rgb": 7, "flow": 5, "obj": 4}


def make(fusion: str = "matt", **kwargs) -> RULSTMFusion:
    torch.manual_seed(0)
    return RULSTMFusion(num_classes=C, feat_dims=DIMS, hidden=H, fusion=fusion, **kwargs).eval()


def features(batch: int = B) -> dict[str, torch.Tensor]:
    return {name: torch.randn(batch, T, dim) for name, dim in DIMS.items()}


@pytest.mark.parametrize("fusion", ["matt", "average"])
@pytest.mark.parametrize("batch", [1, B])
def test_shapes_and_weights_sum_to_one(fusion, batch):
    model = make(fusion)
    logits, weights = model(features(batch), return_weights=True, last_steps=2)
    assert logits.shape == (batch, 2, C)
    assert weights.shape == (batch, 2, len(DIMS))
    torch.testing.assert_close(weights.sum(-1), torch.ones(batch, 2))
    assert (weights >= 0).all()
    assert model(features(batch)).shape == (batch, T, C)


def test_matt_is_weighted_sum_of_branch_scores():
    model = make()
    x = features()
    with torch.no_grad():
        fused, weights = model(x, return_weights=True)
        outputs = [branch(x[name], return_context=True) for name, branch in model.branches.items()]
        context = torch.cat([c for _, c in outputs], dim=-1)  # (B, T, 2*M*H)
        expected_weights = model.attention(context).softmax(-1)
        expected = sum(
            w.unsqueeze(-1) * s for w, (s, _) in zip(expected_weights.unbind(-1), outputs)
        )
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)


def test_average_fusion_is_mean_of_branch_scores():
    model = make("average")
    assert model.attention is None
    x = features()
    with torch.no_grad():
        fused = model(x, last_steps=3)
        expected = torch.stack([b(x[n], last_steps=3) for n, b in model.branches.items()]).mean(0)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)
    assert not any(name.startswith("attention") for name, _ in model.named_parameters())


def test_module_names_are_a_contract():
    model = make()
    assert model.modalities == ("rgb", "flow", "obj")
    names = {name for name, _ in model.named_parameters()}
    in_size = 2 * len(DIMS) * H
    assert model.attention[0].weight.shape == (in_size // 4, in_size)
    assert model.attention[3].weight.shape == (in_size // 8, in_size // 4)
    assert model.attention[6].weight.shape == (len(DIMS), in_size // 8)
    for modality in DIMS:
        assert f"branches.{modality}.rolling_lstm.weight_ih_l0" in names
        assert f"branches.{modality}.classifier.1.weight" in names


def test_missing_and_extra_modalities_raise_key_error_naming_them():
    model = make()
    x = features()
    del x["flow"]
    with pytest.raises(KeyError, match="flow"):
        model(x)
    x = features()
    x["audio"] = torch.randn(B, T, 3)
    with pytest.raises(KeyError, match="audio"):
        model(x)


def test_mismatched_time_lengths_raise():
    x = features()
    x["obj"] = x["obj"][:, :-1]
    with pytest.raises(ValueError, match="obj"):
        make()(x)


def test_from_branches_uses_given_branches_in_order():
    torch.manual_seed(0)
    branches = {
        name: RULSTM(num_classes=C, feat_dim=dim, hidden=H) for name, dim in reversed(DIMS.items())
    }
    model = RULSTMFusion.from_branches(branches, dropout=0.3, fusion="matt").eval()
    assert model.modalities == ("obj", "flow", "rgb")
    assert model.branches["rgb"] is branches["rgb"]
    assert model.attention[2].p == 0.3
    logits, weights = model(features(), return_weights=True)
    assert logits.shape == (B, T, C) and weights.shape == (B, T, 3)


def test_from_branches_rejects_inconsistent_branches():
    branches = {
        "rgb": RULSTM(num_classes=C, feat_dim=7, hidden=H),
        "flow": RULSTM(num_classes=C, feat_dim=5, hidden=H + 1),
    }
    with pytest.raises(ValueError, match="flow"):
        RULSTMFusion.from_branches(branches)


@pytest.mark.parametrize("sequence_completion", [False, True])
@pytest.mark.parametrize("last_steps", [None, 3])
def test_parallel_and_sequential_fusion_agree_with_gradients(sequence_completion, last_steps):
    model = make(dropout=0.0, depth=2).train()
    x0 = features()
    kwargs = {"sequence_completion": sequence_completion, "last_steps": last_steps}
    results = {}
    for mode in ("parallel", "sequential"):
        for branch in model.branches.values():
            branch.unroll_mode = mode
        model.zero_grad()
        x = {k: v.clone().requires_grad_(True) for k, v in x0.items()}
        logits, weights = model(x, return_weights=True, **kwargs)
        (logits.square().sum() + weights[..., 0].sum()).backward()
        grads = {f"x.{k}": v.grad for k, v in x.items()}
        grads.update({n: p.grad.clone() for n, p in model.named_parameters()})
        results[mode] = (logits.detach(), weights.detach(), grads)
    (logits_p, weights_p, grads_p), (logits_s, weights_s, grads_s) = results.values()
    torch.testing.assert_close(logits_p, logits_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights_p, weights_s, rtol=1e-5, atol=1e-5)
    for name, grad in grads_s.items():
        torch.testing.assert_close(grads_p[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_invalid_fusion_mode():
    with pytest.raises(ValueError, match="fusion"):
        make("max")
