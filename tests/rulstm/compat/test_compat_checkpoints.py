"""Importing reference checkpoints: outputs match an independent reference forward pass."""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rulstm.compat import (
    CheckpointImportError,
    import_checkpoint,
    load_reference_checkpoint,
    read_reference_checkpoint,
)
from rulstm.models import RULSTM, RULSTMFusion

STEPS = 5


@pytest.mark.parametrize("depth", [1, 2])
def test_branch_matches_reference(ref, tmp_path: Path, generator: torch.Generator, depth: int):
    state = ref.reference_branch_state_dict(generator, feat_dim=6, depth=depth)
    path = ref.save_reference_checkpoint(tmp_path / "rgb_best.pth.tar", state)
    model = load_reference_checkpoint(path).eval()
    assert isinstance(model, RULSTM)
    assert (model.feat_dim, model.hidden, model.num_classes, model.depth) == (
        6,
        ref.HIDDEN,
        ref.NUM_CLASSES,
        depth,
    )
    x = torch.randn(3, STEPS, 6, generator=generator)
    expected_scores, expected_context = ref.reference_branch_forward(state, x, depth=depth)
    with torch.no_grad():
        scores = model(x)
        last, context = model(x, last_steps=2, return_context=True)
    torch.testing.assert_close(scores, expected_scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, expected_scores[:, -2:], atol=1e-5, rtol=1e-5)
    if depth == 1:
        torch.testing.assert_close(context, expected_context[:, -2:], atol=1e-5, rtol=1e-5)


def test_fusion_matches_reference(ref, tmp_path: Path, generator: torch.Generator):
    state = ref.reference_fusion_state_dict(generator)
    path = ref.save_reference_checkpoint(tmp_path / "fusion_best.pth.tar", state)
    model = load_reference_checkpoint(path).eval()
    assert isinstance(model, RULSTMFusion)
    assert model.modalities == ("rgb", "flow", "obj")
    inputs = {m: torch.randn(2, STEPS, d, generator=generator) for m, d in ref.FEAT_DIMS.items()}
    expected = ref.reference_fusion_forward(state, list(inputs.values()))
    with torch.no_grad():
        fused = model(inputs)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    # A batch of one (the reference itself crashes there).
    with torch.no_grad():
        single = model({m: x[:1] for m, x in inputs.items()})
    torch.testing.assert_close(single, expected[:1], atol=1e-5, rtol=1e-5)


def test_metadata_and_numpy_scalars_load_safely(ref, tmp_path: Path, generator: torch.Generator):
    state = ref.reference_branch_state_dict(generator, feat_dim=4)
    checkpoint = read_reference_checkpoint(ref.save_reference_checkpoint(tmp_path / "a.pth", state))
    assert (checkpoint.epoch, checkpoint.perf, checkpoint.best_perf) == (42, 31.5, 32.25)


def test_numpy1_pickles_load_safely(ref, tmp_path: Path, generator: torch.Generator):
    """Released files were pickled by numpy 1.x: ``numpy.core.multiarray.scalar``."""
    state = ref.reference_branch_state_dict(generator, feat_dim=4)
    legacy = tmp_path / "legacy.pth.tar"
    torch.save(
        {"state_dict": state, "epoch": 1, "perf": np.float64(2.5), "best_perf": np.float64(3.0)},
        legacy,
        _use_new_zipfile_serialization=False,
    )
    raw = legacy.read_bytes()
    assert b"numpy._core.multiarray\n" in raw
    legacy.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    checkpoint = read_reference_checkpoint(legacy)
    assert (checkpoint.perf, checkpoint.best_perf) == (2.5, 3.0)


def test_other_objects_need_unsafe(ref, tmp_path: Path, generator: torch.Generator):
    state = ref.reference_branch_state_dict(generator, feat_dim=4)
    path = ref.save_reference_checkpoint(
        tmp_path / "args.pth.tar", state, args=argparse.Namespace(lr=0.01)
    )
    with pytest.raises(CheckpointImportError, match="--unsafe"):
        read_reference_checkpoint(path)
    assert read_reference_checkpoint(path, unsafe=True).epoch == 42


def test_bad_checkpoints_name_the_key(ref, tmp_path: Path, generator: torch.Generator):
    state = ref.reference_branch_state_dict(generator, feat_dim=4)
    del state["classifier.1.bias"]
    path = ref.save_reference_checkpoint(tmp_path / "broken.pth.tar", state)
    with pytest.raises(
        CheckpointImportError, match=r"broken.pth.tar: missing key 'classifier.1.bias'"
    ):
        load_reference_checkpoint(path)
    state = ref.reference_branch_state_dict(generator, feat_dim=4)
    state["extra.weight"] = torch.zeros(1)
    path = ref.save_reference_checkpoint(tmp_path / "extra.pth.tar", state)
    with pytest.raises(CheckpointImportError, match="unexpected keys.*extra.weight"):
        load_reference_checkpoint(path)
    fusion = ref.reference_fusion_state_dict(generator)
    path = ref.save_reference_checkpoint(tmp_path / "fusion.pth.tar", fusion)
    with pytest.raises(CheckpointImportError, match="expected one per modality"):
        load_reference_checkpoint(path, modalities=("rgb", "flow"))


def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path: Path):
    text = tmp_path / "predictions.jsonl"
    text.write_text('{"frame": 7}\n')
    with pytest.raises(CheckpointImportError, match="predictions.jsonl: not a PyTorch checkpoint"):
        read_reference_checkpoint(text)


class _Tester(L.LightningModule):
    """Stores the network as ``self.net``, like the project's AnticipationModule."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.outputs: list[torch.Tensor] = []

    def test_step(self, batch, batch_idx):
        self.outputs.append(self.net(batch))


def test_lightning_checkpoint_loads_into_a_module(ref, tmp_path: Path, generator: torch.Generator):
    state = ref.reference_branch_state_dict(generator, feat_dim=6)
    source = ref.save_reference_checkpoint(tmp_path / "rgb_best.pth.tar", state)
    converted = import_checkpoint(source, tmp_path / "rgb.ckpt")
    saved = torch.load(tmp_path / "rgb.ckpt", weights_only=True)
    assert saved["rulstm_net"] == {
        "class_path": "rulstm.models.RULSTM",
        "init_args": {"num_classes": 7, "feat_dim": 6, "hidden": 8, "dropout": 0.8, "depth": 1},
    }
    assert saved["rulstm_reference"]["best_perf"] == 32.25
    assert set(saved["state_dict"]) == {f"net.{k}" for k in converted.state_dict}

    # Lightning restores the weights into a freshly initialised network.
    module = _Tester(RULSTM(**converted.init_args))
    x = torch.randn(4, STEPS, 6, generator=generator)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(
        module,
        dataloaders=DataLoader(x, batch_size=4),
        ckpt_path=str(tmp_path / "rgb.ckpt"),
        verbose=False,
    )
    expected, _ = ref.reference_branch_forward(state, x)
    torch.testing.assert_close(module.outputs[0], expected, atol=1e-5, rtol=1e-5)


def test_fusion_lightning_checkpoint(ref, tmp_path: Path, generator: torch.Generator):
    source = ref.save_reference_checkpoint(
        tmp_path / "fusion_best.pth.tar", ref.reference_fusion_state_dict(generator)
    )
    converted = import_checkpoint(source, tmp_path / "fusion.ckpt")
    saved = torch.load(tmp_path / "fusion.ckpt", weights_only=True)
    init_args = saved["rulstm_net"]["init_args"]
    assert saved["rulstm_net"]["class_path"] == "rulstm.models.RULSTMFusion"
    assert init_args["feat_dims"] == ref.FEAT_DIMS and init_args["fusion"] == "matt"
    network = RULSTMFusion(**init_args)
    network.load_state_dict({k[len("net.") :]: v for k, v in saved["state_dict"].items()})
    assert "attention.6.weight" in converted.state_dict
