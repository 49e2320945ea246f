"""Exporting to the reference's layout: the exact inverse of the importer, with the names and
the semantics of the independent reference restatement in conftest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rulstm.compat import (
    convert_reference_state_dict,
    export_reference_state_dict,
    load_reference_checkpoint,
    read_reference_checkpoint,
    write_reference_checkpoint,
)
from rulstm.compat.checkpoints import build_network
from rulstm.models import RULSTM, LSTMBaseline, RULSTMFusion

STEPS = 5


def _assert_same_state(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


@pytest.mark.parametrize("depth", [1, 2])
def test_branch_round_trip(generator: torch.Generator, depth: int):
    torch.manual_seed(1)
    net = RULSTM(num_classes=7, feat_dim=6, hidden=8, depth=depth).eval()
    converted = convert_reference_state_dict(export_reference_state_dict(net))
    _assert_same_state(converted.state_dict, net.state_dict())
    assert converted.init_args == {
        "num_classes": 7,
        "feat_dim": 6,
        "hidden": 8,
        "dropout": 0.8,
        "depth": depth,
    }
    imported = build_network(converted).eval()
    x = torch.randn(3, STEPS, 6, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), net(x), atol=1e-6, rtol=0)


def test_fusion_round_trip_keeps_the_modality_order(generator: torch.Generator):
    torch.manual_seed(2)
    dims = {"flow": 5, "rgb": 6}  # not the default order: the export must keep it
    net = RULSTMFusion(num_classes=7, feat_dims=dims, hidden=8).eval()
    converted = convert_reference_state_dict(
        export_reference_state_dict(net), modalities=tuple(dims)
    )
    _assert_same_state(converted.state_dict, net.state_dict())
    assert converted.init_args["feat_dims"] == dims
    imported = build_network(converted).eval()
    x = {m: torch.randn(2, STEPS, d, generator=generator) for m, d in dims.items()}
    with torch.no_grad():
        torch.testing.assert_close(imported(x), net(x), atol=1e-6, rtol=0)


def test_names_shapes_and_outputs_are_the_references(ref, generator: torch.Generator):
    """Against conftest's reference restatement: same names (in the reference's state dict
    order) and shapes, and the reference forward pass on the exported weights gives the
    network's outputs."""
    torch.manual_seed(3)
    net = RULSTMFusion(num_classes=ref.NUM_CLASSES, feat_dims=ref.FEAT_DIMS, hidden=ref.HIDDEN)
    state = export_reference_state_dict(net.eval())
    reference = ref.reference_fusion_state_dict(generator)
    assert [(k, v.shape) for k, v in state.items()] == [(k, v.shape) for k, v in reference.items()]
    branch = export_reference_state_dict(net.branches["rgb"])
    expected = ref.reference_branch_state_dict(generator, feat_dim=ref.FEAT_DIMS["rgb"])
    assert [(k, v.shape) for k, v in branch.items()] == [(k, v.shape) for k, v in expected.items()]

    inputs = {m: torch.randn(2, STEPS, d, generator=generator) for m, d in ref.FEAT_DIMS.items()}
    with torch.no_grad():
        fused = net(inputs)
        scores = net.branches["rgb"](inputs["rgb"])
    torch.testing.assert_close(
        ref.reference_fusion_forward(state, list(inputs.values())), fused, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        ref.reference_branch_forward(branch, inputs["rgb"])[0], scores, atol=1e-5, rtol=1e-5
    )


def test_what_the_reference_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="float LSTM branches only, not GRU"):
        export_reference_state_dict(RULSTM(num_classes=3, feat_dim=4, hidden=2, cell="gru"))
    with pytest.raises(ValueError, match="fusion='average' has no MATT"):
        export_reference_state_dict(
            RULSTMFusion(num_classes=3, feat_dims={"rgb": 4}, hidden=2, fusion="average")
        )
    with pytest.raises(ValueError, match="different hidden sizes"):
        export_reference_state_dict(
            RULSTMFusion(
                num_classes=3, feat_dims={"rgb": 4, "flow": 2}, hidden={"rgb": 2, "flow": 4}
            )
        )
    with pytest.raises(TypeError, match="got LSTMBaseline"):
        export_reference_state_dict(LSTMBaseline(num_classes=3, feat_dim=4))


def test_written_file_has_the_released_layout(tmp_path: Path, generator: torch.Generator):
    torch.manual_seed(4)
    net = RULSTM(num_classes=7, feat_dim=6, hidden=8).eval()
    path = write_reference_checkpoint(
        net, tmp_path / "rgb_best.pth.tar", epoch=3, perf=12.5, best_perf=13.0
    )
    raw = torch.load(path, weights_only=False)
    assert list(raw) == ["state_dict", "epoch", "perf", "best_perf"]
    assert type(raw["perf"]) is np.float64 and type(raw["best_perf"]) is np.float64
    checkpoint = read_reference_checkpoint(path)  # safe loading accepts it
    assert (checkpoint.epoch, checkpoint.perf, checkpoint.best_perf) == (3, 12.5, 13.0)
    _assert_same_state(checkpoint.state_dict, export_reference_state_dict(net))
    x = torch.randn(2, STEPS, 6, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(
            load_reference_checkpoint(path).eval()(x), net(x), atol=1e-6, rtol=0
        )
