from __future__ import annotations

import pytest
import torch

from rulstm.models import RULSTM, RULSTMFusion
from rulstm.models.spec import NET_KEY, describe_net
from rulstm.online import OnlineAnticipator

T = 14


def test_branch_online_equals_offline_window():
    torch.manual_seed(0)
    net = RULSTM(num_classes=7, feat_dim=5, hidden=6, dropout=0.5).eval()
    x = torch.randn(1, T, 5)
    offline = net(x)  # (1, T, C)
    times = tuple(0.25 * k for k in range(T, 0, -1))  # every step's own horizon
    online = OnlineAnticipator(net, alpha=0.25, times=times)
    for t in range(T):
        prediction = online.step({"rgb": x[0, t]})
        # Step t of a T-step window predicts (T - t) * alpha seconds ahead.
        index = prediction.times.index(0.25 * (T - t))
        torch.testing.assert_close(prediction.logits[index], offline[0, t], atol=1e-5, rtol=0)
        assert prediction.weights is None and prediction.step == t
    online.reset()
    again = online.step({"rgb": x[0, 0]})
    torch.testing.assert_close(again.logits[0], offline[0, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("hidden", [8, {"rgb": 6, "flow": 8, "obj": 8}], ids=["one", "per-branch"])
@pytest.mark.parametrize("fusion", ["matt", "average"])
def test_fusion_online_equals_offline_window(fusion, hidden):
    torch.manual_seed(1)
    dims = {"rgb": 5, "flow": 4, "obj": 3}
    net = RULSTMFusion(num_classes=9, feat_dims=dims, hidden=hidden, depth=2, fusion=fusion).eval()
    x = {m: torch.randn(1, T, d) for m, d in dims.items()}
    offline, offline_weights = net(x, return_weights=True)
    online = OnlineAnticipator(net)  # default times 2.0 ... 0.25 s
    assert online.times == (2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25)
    for t in range(T):
        prediction = online.step({m: x[m][0, t] for m in dims})
        if T - t <= 8:
            index = prediction.times.index(0.25 * (T - t))
            torch.testing.assert_close(prediction.logits[index], offline[0, t], atol=1e-5, rtol=0)
            for i, m in enumerate(dims):
                torch.testing.assert_close(
                    prediction.weights[m][index], offline_weights[0, t, i], atol=1e-5, rtol=0
                )
        total = sum(prediction.weights[m] for m in dims)
        torch.testing.assert_close(total, torch.ones(8))
        assert torch.allclose(prediction.probabilities.sum(-1), torch.ones(8))


def test_from_checkpoint_and_top_k(tmp_path):
    net = RULSTM(num_classes=6, feat_dim=3, hidden=4).eval()
    path = tmp_path / "rgb.ckpt"
    torch.save(
        {
            NET_KEY: describe_net(net),
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        },
        path,
    )
    online = OnlineAnticipator.from_checkpoint(path, times=(1.0,))
    x = torch.randn(3)
    prediction = online.step({"rgb": x})
    expected = net.unroll(x[None], net.roll(x[None]), 5)[0]
    torch.testing.assert_close(prediction.logits[0], expected)
    top = prediction.top_k(3, time=1.0)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


def test_from_checkpoint_builds_a_fusion_of_different_hidden_sizes(tmp_path):
    torch.manual_seed(3)
    dims, hidden = {"rgb": 5, "flow": 4}, {"rgb": 6, "flow": 8}
    net = RULSTMFusion(num_classes=4, feat_dims=dims, hidden=hidden).eval()
    path = tmp_path / "fusion.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({NET_KEY: describe_net(net), "state_dict": state}, path)
    online = OnlineAnticipator.from_checkpoint(path, times=(0.25,))
    assert online.net.hidden == hidden
    x = {m: torch.randn(1, T, d) for m, d in dims.items()}
    offline = net(x)
    for t in range(T):
        prediction = online.step({m: x[m][0, t] for m in dims})
    torch.testing.assert_close(prediction.logits[0], offline[0, -1], atol=1e-5, rtol=0)


def test_bad_inputs():
    net = RULSTMFusion(num_classes=3, feat_dims={"rgb": 2, "obj": 2}, hidden=4)
    with pytest.raises(ValueError, match="not a multiple of alpha"):
        OnlineAnticipator(net, times=(0.3,))
    online = OnlineAnticipator(net)
    with pytest.raises(KeyError, match="missing features for modality 'obj'"):
        online.step({"rgb": torch.zeros(2)})
    with pytest.raises(TypeError, match="RULSTM or RULSTMFusion"):
        OnlineAnticipator(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        OnlineAnticipator.from_checkpoint("nothing.ckpt")


@pytest.mark.parametrize("depth", [1, 2])
def test_unroll_horizons_equals_separate_unrollings(depth):
    torch.manual_seed(2)
    net = RULSTM(num_classes=5, feat_dim=4, hidden=6, depth=depth).eval()
    x = torch.randn(2, 4)
    state = net.roll(x, net.roll(torch.randn(2, 4)))
    lengths = [9, 5, 2, 1]
    logits, context = net.unroll_horizons(x, state, lengths, return_context=True)
    for k, n in enumerate(lengths):
        expected_logits, expected_context = net.unroll(x, state, n, return_context=True)
        torch.testing.assert_close(logits[:, k], expected_logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(context[:, k], expected_context, atol=1e-6, rtol=0)


def _stream(dims: dict[str, int], steps: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{m: torch.randn(d, generator=generator) for m, d in dims.items()} for _ in range(steps)]


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_low_precision_fusion_follows_float32(weights):
    torch.manual_seed(5)
    dims = {"rgb": 24, "flow": 24, "obj": 12}
    net = RULSTMFusion(num_classes=40, feat_dims=dims, hidden=32, depth=1).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    exact = OnlineAnticipator(net)
    low = OnlineAnticipator(net, weights=weights)
    assert low.weights == weights
    agree, scale, worst = 0, 0.0, 0.0
    stream = _stream(dims, 20, seed=6)
    for features in stream:
        ref, got = exact.step(features), low.step(features)
        assert got.logits.dtype == torch.float32 and got.logits.shape == ref.logits.shape
        scale = max(scale, ref.logits.abs().max().item())
        worst = max(worst, (got.logits - ref.logits).abs().max().item())
        agree += {a for a, _ in ref.top_k(5)} == {a for a, _ in got.top_k(5)}
        total = sum(got.weights[m] for m in dims)
        torch.testing.assert_close(total, torch.ones(8), atol=1e-2, rtol=0)
    # Random weights make close calls more frequent than a trained net: a loose bound.
    assert 0 < worst < 0.1 * scale  # (0: the low-precision copy really ran)
    assert agree >= 0.8 * len(stream)
    # The anticipator quantised a copy: the caller's float32 net is untouched.
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_low_precision_branch_with_two_layers(weights):
    torch.manual_seed(7)
    net = RULSTM(num_classes=30, feat_dim=16, hidden=24, depth=2).eval()
    exact, low = OnlineAnticipator(net), OnlineAnticipator(net, weights=weights)
    for features in _stream({"rgb": 16}, 10, seed=8):
        ref, got = exact.step(features), low.step(features)
        assert got.weights is None
        torch.testing.assert_close(got.probabilities, ref.probabilities, atol=0.02, rtol=0)


def test_unknown_or_unsupported_precision_is_refused():
    net = RULSTM(num_classes=5, feat_dim=4, hidden=4)
    with pytest.raises(ValueError, match="weights must be"):
        OnlineAnticipator(net, weights="fp16")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CPU only"):
            OnlineAnticipator(net, weights="int8", device="cuda")


def _save(net: torch.nn.Module, path, hyper_parameters=None):
    checkpoint = {
        NET_KEY: describe_net(net),
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
    }
    if hyper_parameters:
        checkpoint["hyper_parameters"] = hyper_parameters
    torch.save(checkpoint, path)
    return path


def test_from_checkpoint_averages_branches_and_a_fusion_without_a_modality(tmp_path):
    torch.manual_seed(3)
    fusion = RULSTMFusion(num_classes=5, feat_dims={"rgb": 3, "flow": 4, "obj": 2}, hidden=6)
    fusion_path = _save(fusion.eval(), tmp_path / "fusion.ckpt", {"alpha": 0.5})
    rgb_path = _save(fusion.branches["rgb"], tmp_path / "RULSTM_rgb_best.ckpt")
    flow_path = _save(fusion.branches["flow"], tmp_path / "other.ckpt")
    xs = [{"rgb": torch.randn(3), "flow": torch.randn(4)} for _ in range(3)]

    def separate(name):
        online = OnlineAnticipator(fusion.branches[name], modality=name, alpha=0.5, times=(1.0,))
        return [online.step(x).logits for x in xs]

    expected = [(r + f) / 2 for r, f in zip(separate("rgb"), separate("flow"), strict=True)]

    # A fusion without obj features: its rgb and flow branches, averaged (not MATT).
    dropped = OnlineAnticipator.from_checkpoint(
        fusion_path, available=["rgb", "flow"], times=(1.0,)
    )
    assert dropped.left_out == ("obj",) and dropped.fusion == "average"
    assert dropped.alpha == 0.5  # from the checkpoint
    assert dropped.feature_dims == {"rgb": 3, "flow": 4}
    # Two branch checkpoints: the rgb one named by its file, the flow one given.
    averaged = OnlineAnticipator.from_checkpoint(
        [rgb_path, flow_path], modality=[None, "flow"], alpha=0.5, times=(1.0,)
    )
    assert averaged.fusion == "average" and averaged.modalities == ("rgb", "flow")
    for online in (dropped, averaged):
        for x, want in zip(xs, expected, strict=True):
            torch.testing.assert_close(online.step(x).logits, want)
    # Default times: alpha * (8 .. 1), plus a horizon that is not among them.
    full = OnlineAnticipator.from_checkpoint(fusion_path, horizon=0.5)
    assert full.fusion == "matt" and full.left_out == ()
    assert full.times == (4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5)


def test_from_checkpoint_errors_name_the_file(tmp_path):
    branch = RULSTM(num_classes=5, feat_dim=3, hidden=4).eval()
    unnamed = _save(branch, tmp_path / "branch_a.ckpt")
    also = _save(branch, tmp_path / "branch_b.ckpt")
    with pytest.raises(ValueError, match="branch_a.ckpt does not record its modality"):
        OnlineAnticipator.from_checkpoint([unnamed, also])
    slow = _save(branch, tmp_path / "slow_rgb.ckpt", {"alpha": 0.5})
    fast = _save(branch, tmp_path / "fast_flow.ckpt", {"alpha": 0.25})
    with pytest.raises(ValueError, match="different alphas"):
        OnlineAnticipator.from_checkpoint([slow, fast])
    recognition = _save(branch, tmp_path / "er.ckpt", {"task": "early_recognition"})
    with pytest.raises(ValueError, match="er.ckpt was trained for early_recognition"):
        OnlineAnticipator.from_checkpoint(recognition)
    fusion = RULSTMFusion(num_classes=5, feat_dims={"rgb": 3, "obj": 2}, hidden=4)
    path = _save(fusion, tmp_path / "fusion.ckpt")
    with pytest.raises(ValueError, match=r"fusion.ckpt fuses \['rgb', 'obj'\], none of which"):
        OnlineAnticipator.from_checkpoint(path, available=["flow"])


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_weights_follow_native_bf16(native, expected, force_bf16_native):
    force_bf16_native(native)
    torch.manual_seed(9)
    net = RULSTM(num_classes=12, feat_dim=8, hidden=12).eval()
    auto = OnlineAnticipator(net, weights="auto")
    assert auto.requested_weights == "auto" and auto.weights == expected
    assert next(auto.net.parameters()).dtype == (
        torch.bfloat16 if expected == "bf16" else torch.float32
    )
    exact = OnlineAnticipator(net)
    for features in _stream({"rgb": 8}, 4, seed=10):
        ref, got = exact.step(features), auto.step(features)
        torch.testing.assert_close(got.probabilities, ref.probabilities, atol=0.02, rtol=0)


def test_auto_weights_stay_fp32_for_gru_branches(force_bf16_native):
    force_bf16_native(True)
    net = RULSTM(num_classes=5, feat_dim=4, hidden=4, cell="gru")
    assert OnlineAnticipator(net, weights="auto").weights == "fp32"


def test_auto_weights_are_resolved_again_on_a_move(force_bf16_native, monkeypatch):
    from epic_protocol import precision

    force_bf16_native(False)
    net = RULSTM(num_classes=5, feat_dim=4, hidden=4)
    anticipator = OnlineAnticipator(net, weights="auto")
    assert anticipator.weights == "fp32"
    # A device with native bf16 ("meta" stands in for a GPU: no computation needed).
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    anticipator.to("meta")
    assert anticipator.weights == "bf16"
    assert next(anticipator.net.parameters()).dtype == torch.bfloat16


def test_explicit_bf16_weights_on_an_emulating_cpu_warn(force_bf16_native):
    from epic_protocol.precision import EmulatedBf16Warning

    force_bf16_native(False)
    net = RULSTM(num_classes=5, feat_dim=4, hidden=4)
    with pytest.warns(EmulatedBf16Warning, match="weights='bf16'"):
        assert OnlineAnticipator(net, weights="bf16").weights == "bf16"
