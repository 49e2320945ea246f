"""A user's weights file or model folder for a foundation backbone (timm, OpenCLIP, Hugging
Face) loads tensors only: a pickle payload never runs, a folder naming its own code
(``auto_map``, a custom ``model_type``) never imports it, and either is one line naming the
file. Also: an OpenCLIP model folder's weights are really loaded. Tiny models, no network."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_extraction.cli import main
from feature_extraction.foundation import build_foundation_backbone
from feature_extraction.foundation_loaders import no_remote_code
from feature_extraction.weights import RefusedWeightsError, check_weights_file

pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

SIZE = 32


class Payload:
    """Unpickling it calls ``open(marker, "w")``: the marker file appears if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _poisoned(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path


def _clip_config() -> dict:
    return {
        "embed_dim": 24,
        "vision_cfg": {"image_size": SIZE, "layers": 1, "width": 32, "patch_size": 8,
                       "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip


def _clip_config_file(path: Path) -> Path:
    path.write_text(json.dumps(_clip_config()))
    return path


def _dinov2_config() -> transformers.Dinov2Config:
    return transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=SIZE, patch_size=8,
    )  # fmt: skip


def _code_folder(folder: Path, marker: Path, config: dict) -> Path:
    """A model folder whose config names a module of its own that creates ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    return folder


AUTO_MAP = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}


def _route(kind: str, tmp_path: Path, marker: Path) -> tuple[str, str, Path]:
    """(backbone, weights, the file the refusal must name) of each family's local route."""
    if kind == "timm file":
        bad = _poisoned(tmp_path / "vit.pth", marker)
        return "timm:test_vit", str(bad), bad
    if kind == "timm folder":
        (tmp_path / "snap").mkdir()
        bad = _poisoned(tmp_path / "snap" / "pytorch_model.bin", marker)
        return "timm:test_vit", str(bad.parent), bad
    config = _clip_config_file(tmp_path / "tiny-clip-poison.json")
    if kind == "open_clip file":
        bad = _poisoned(tmp_path / "clip.pt", marker)
        return f"open_clip:{config}", str(bad), bad
    if kind == "open_clip folder":
        folder = tmp_path / "clipdir"
        folder.mkdir()
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _clip_config()}))
        bad = _poisoned(folder / "open_clip_pytorch_model.bin", marker)
        return f"open_clip:{config}", str(folder), bad
    assert kind == "hf folder"
    folder = tmp_path / "hfdir"
    _dinov2_config().save_pretrained(folder)
    bad = _poisoned(folder / "pytorch_model.bin", marker)
    return "hf:dinov2", str(folder), bad


ROUTES = ["timm file", "timm folder", "open_clip file", "open_clip folder", "hf folder"]


@pytest.mark.parametrize("kind", ROUTES, ids=lambda kind: kind.replace(" ", "-"))
def test_a_pickle_payload_in_a_weights_file_never_runs(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    backbone, weights, bad = _route(kind, tmp_path, marker)
    with pytest.raises(RefusedWeightsError) as caught:
        build_foundation_backbone(name=backbone, weights=weights)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{bad}: refused")
    assert "io.open" in message  # what the payload names
    assert not marker.exists()


def test_the_extraction_command_refuses_it_in_one_line(tmp_path: Path, make_video, capsys) -> None:
    marker = tmp_path / "RAN"
    video = make_video(num_frames=3, width=64, height=48)
    backbone, weights, bad = _route("hf folder", tmp_path, marker)
    arguments = [
        "--videos", str(video.parent), "--out", str(tmp_path / "out"), "--modalities", "rgb",
        "--device", "cpu", "--rgb.backbone", backbone, "--rgb.weights", weights,
        "--num_workers", "0", "--threads", "1", "--progress", "false",
    ]  # fmt: skip
    assert main(arguments) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(bad) in err[0] and "refused" in err[0]
    assert not marker.exists() and not (tmp_path / "out" / "rgb.h5").exists()


@pytest.mark.parametrize(
    "where",
    ["architecture folder", "weights folder", "known type"],
    ids=lambda where: where.replace(" ", "-"),
)
def test_a_model_folder_naming_its_own_code_is_refused_unrun(where: str, tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    folder = tmp_path / "remote"
    if where == "known type":  # a shipped model type, the code named by its processor
        _dinov2_config().save_pretrained(folder)
        _code_folder(folder, marker, json.loads((folder / "config.json").read_text()))
        named = folder / "preprocessor_config.json"
        named.write_text(
            json.dumps({"image_processor_type": "EvilProcessor",
                        "auto_map": {"AutoImageProcessor": "evil.EvilProcessor"}})
        )  # fmt: skip
        backbone, weights = f"hf:{folder}", "none"
    else:
        _code_folder(folder, marker, {"model_type": "evil", "auto_map": AUTO_MAP})
        named = folder / "config.json"
        backbone, weights = (
            (f"hf:{folder}", "none") if where == "architecture folder" else ("hf:evil", str(folder))
        )
    with pytest.raises(RefusedWeightsError) as caught:
        build_foundation_backbone(name=backbone, weights=weights)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{named}: refused")
    assert "auto_map" in message and not marker.exists()


def test_a_custom_model_type_is_refused_naming_the_config(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "my_video_net"}))
    with pytest.raises(ValueError) as caught:
        build_foundation_backbone(name=f"hf:{folder}", weights="none")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{folder / 'config.json'}: model_type")
    assert "my_video_net" in message


def test_an_open_clip_text_tower_folder_naming_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    tower = _code_folder(tmp_path / "tower", marker, {"model_type": "evil", "auto_map": AUTO_MAP})
    config = _clip_config()
    config["text_cfg"] = {"hf_model_name": str(tower), "hf_tokenizer_name": str(tower),
                          "hf_model_pretrained": False, "context_length": 8}  # fmt: skip
    config_file = tmp_path / "tiny-clip-hf-tower.json"
    config_file.write_text(json.dumps(config))
    with pytest.raises(RefusedWeightsError) as caught:
        build_foundation_backbone(name=f"open_clip:{config_file}", weights="none")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{tower / 'config.json'}: refused")
    assert not marker.exists()


def test_transformers_never_asks_to_run_a_folders_code(tmp_path: Path, monkeypatch) -> None:
    """Inside :func:`no_remote_code` transformers refuses instead of prompting "Do you wish to
    run the custom code? [y/N]" (an answer of "y" would run it)."""
    marker = tmp_path / "RAN"
    folder = _code_folder(tmp_path / "remote", marker, {"model_type": "evil", "auto_map": AUTO_MAP})

    def answer_yes(prompt: str = "") -> str:
        raise AssertionError(f"prompted: {prompt}")

    monkeypatch.setattr(builtins, "input", answer_yes)
    with no_remote_code(), pytest.raises(ValueError):
        transformers.AutoConfig.from_pretrained(folder)
    assert not marker.exists()
    import transformers.dynamic_module_utils as dynamic

    assert dynamic.TIME_OUT_REMOTE_CODE > 0  # restored afterwards


def test_a_weights_file_of_tensors_passes_and_a_broken_one_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, good)
    check_weights_file(good)
    legacy = tmp_path / "legacy.pth.tar"  # the pre-zip format (the authors' TSN files)
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    check_weights_file(legacy)
    broken = tmp_path / "broken.bin"
    broken.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ValueError) as caught:
        check_weights_file(broken)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{broken}: not")


def _open_clip_folder(folder: Path, seed: int) -> tuple[torch.nn.Module, object]:
    """A tiny OpenCLIP model saved as a model folder (open_clip_config.json + safetensors), as
    ``open_clip.push_to_hf_hub`` writes it."""
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config_file = _clip_config_file(folder.parent / f"{folder.name}-arch.json")
    open_clip.add_model_config(config_file)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(config_file.stem)
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=_clip_config())
    return model.eval(), preprocess


def test_an_open_clip_model_folder_loads_its_weights(tmp_path: Path, make_video) -> None:
    """--rgb.weights FOLDER for OpenCLIP: the folder's weights, not a random model (OpenCLIP
    builds one without an error when asked to load nothing)."""
    from PIL import Image

    from tests.feature_extraction.conftest import coded_frame

    model, preprocess = _open_clip_folder(tmp_path / "clip-folder", seed=11)
    config_file = tmp_path / "clip-folder-arch.json"
    backbone = build_foundation_backbone(
        name=f"open_clip:{config_file}", weights=str(tmp_path / "clip-folder"), seed=0
    )
    frames = [coded_frame(i, width=96, height=64) for i in (3, 9)]
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
    torch.testing.assert_close(
        backbone(torch.from_numpy(np.stack(frames))), expected, rtol=0, atol=1e-5
    )
    assert backbone.record["weights"] == str(tmp_path / "clip-folder")
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": _clip_config()}))
    with pytest.raises(FileNotFoundError) as caught:
        build_foundation_backbone(name=f"open_clip:{config_file}", weights=str(empty))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{empty}: no OpenCLIP")


def test_an_open_clip_folder_of_another_architecture_is_refused(tmp_path: Path) -> None:
    """The feature file records --rgb.backbone's architecture: a folder whose image tower is
    another one (OpenCLIP would build the folder's) is refused naming its config."""
    _open_clip_folder(tmp_path / "clip-folder", seed=1)
    wider = _clip_config()
    wider["vision_cfg"] = {**wider["vision_cfg"], "width": 64}
    other = tmp_path / "tiny-clip-wider.json"
    other.write_text(json.dumps(wider))
    with pytest.raises(ValueError) as caught:
        build_foundation_backbone(name=f"open_clip:{other}", weights=str(tmp_path / "clip-folder"))
    message = str(caught.value)
    config_file = tmp_path / "clip-folder" / "open_clip_config.json"
    assert "\n" not in message and message.startswith(f"{config_file}: its image tower is not")


def test_a_saved_processor_that_does_not_load_is_named_not_replaced(tmp_path: Path) -> None:
    """Preprocessing is the folder's processor: a broken one is an error naming its file,
    never silently the model type's default settings."""
    folder = tmp_path / "dinov2"
    _dinov2_config().save_pretrained(folder)
    broken = folder / "preprocessor_config.json"
    broken.write_text('{"image_processor_type": "BitImageProcessor", "size": ')
    with pytest.raises(ValueError) as caught:
        build_foundation_backbone(name=f"hf:{folder}", weights="none")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{broken}: the saved processor")
    broken.unlink()  # no saved processor: the type's default one, as documented
    backbone = build_foundation_backbone(name=f"hf:{folder}", weights="none")
    assert "BitImageProcessor" in backbone.record["preprocessing"]
