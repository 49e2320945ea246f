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
        "flow": RULSTM(num_classes=C + 1, feat_dim=5, hidden=H),
    }
    with pytest.raises(ValueError, match="flow"):
        RULSTMFusion.from_branches(branches)


MIXED = {"rgb": 8, "flow": 16, "obj": 16}


def test_branches_of_different_hidden_sizes_train_and_weights_sum_to_one():
    """An RGB branch of hidden 8 next to flow/obj of 16: MATT reads 2 * (8 + 16 + 16) values."""
    torch.manual_seed(0)
    model = RULSTMFusion(num_classes=C, feat_dims=DIMS, hidden=MIXED)
    assert {m: b.hidden for m, b in model.branches.items()} == MIXED
    assert model.hidden == MIXED and model.branch_hidden == MIXED
    assert model.attention[0].weight.shape == (80 // 4, 80)
    assert model.attention[3].weight.shape == (80 // 8, 80 // 4)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits, weights = model(features(), return_weights=True, last_steps=2)
    torch.nn.functional.cross_entropy(logits.reshape(-1, C), torch.zeros(B * 2).long()).backward()
    optimiser.step()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 2))
    for key in ("attention.0.weight", "branches.rgb.classifier.1.weight"):
        assert not torch.equal(before[key], model.state_dict()[key]), key


def test_from_branches_fuses_branches_of_different_hidden_sizes():
    torch.manual_seed(0)
    branches = {m: RULSTM(num_classes=C, feat_dim=DIMS[m], hidden=h) for m, h in MIXED.items()}
    model = RULSTMFusion.from_branches(branches).eval()
    assert model.hidden == MIXED
    assert model.attention[0].in_features == 2 * sum(MIXED.values())
    logits, weights = model(features(), return_weights=True)
    assert logits.shape == (B, T, C)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))


def test_equal_hidden_sizes_keep_the_reference_layout():
    """One int, or a mapping of equal sizes: the same state-dict keys and shapes as the
    reference-sized fusion (2*M*H -> /4 -> /8 -> M), and ``hidden`` stays the int."""
    reference = {
        "attention.0.weight": (2 * 3 * H // 4, 2 * 3 * H),
        "attention.3.weight": (2 * 3 * H // 8, 2 * 3 * H // 4),
        "attention.6.weight": (3, 2 * 3 * H // 8),
    }
    by_int = RULSTMFusion(num_classes=C, feat_dims=DIMS, hidden=H)
    by_map = RULSTMFusion(num_classes=C, feat_dims=DIMS, hidden=dict.fromkeys(DIMS, H))
    shapes = {k: tuple(v.shape) for k, v in by_int.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in by_map.state_dict().items()}
    assert {k: shapes[k] for k in reference} == reference
    assert by_int.hidden == by_map.hidden == H


@pytest.mark.parametrize(
    "hidden, named",
    [({"rgb": 8, "flow": 16}, r"missing \['obj'\]"),
     ({"rgb": 8, "flow": 16, "obj": 16, "audio": 4}, r"unexpected \['audio'\]")],
)  # fmt: skip
def test_a_hidden_mapping_must_name_exactly_the_modalities(hidden, named):
    with pytest.raises(ValueError, match=named) as error:
        RULSTMFusion(num_classes=C, feat_dims=DIMS, hidden=hidden)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("hidden", [H, MIXED])
def test_describe_net_round_trips_through_build_net(hidden):
    from rulstm.models.spec import build_net, describe_net

    torch.manual_seed(0)
    model = RULSTMFusion(num_classes=C, feat_dims=DIMS, hidden=hidden, dropout=0.5, fusion="matt")
    spec = describe_net(model)
    assert spec["init_args"]["hidden"] == hidden
    rebuilt = build_net(spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.branch_hidden == model.branch_hidden
    x = features()
    torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


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
