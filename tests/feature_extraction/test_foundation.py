"""Foundation-model RGB backbones (timm, OpenCLIP, Hugging Face image and video models):
library preprocessing + forward, the causal clip rule, streaming = offline, the recorded
attributes and the one-line errors. Tiny random models, built from small configs, no network."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from epic_protocol.errors import WeightsUnavailableError
from epic_protocol.sampling import anticipation_frames
from feature_extraction.cli import main
from feature_extraction.clips import clip_frames
from feature_extraction.config import load_config
from feature_extraction.foundation import build_foundation_backbone
from feature_extraction.models import build_models, resolve_precision
from feature_extraction.streaming import StreamingExtractor
from feature_extraction.video import decode_video

pytest.importorskip("timm")
pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

SIZE = 32  # model resolution of the tiny models


def frames_of(path: Path, size: tuple[int, int] | None = (64, 48)) -> list[np.ndarray]:
    width, height = size if size else (None, None)
    return [d.image for d in decode_video(path, fps=30, width=width, height=height)]


def tiny_dinov2(folder: Path) -> Path:
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=SIZE,
        patch_size=8,
    )
    torch.manual_seed(1)
    transformers.Dinov2Model(config).save_pretrained(folder)
    transformers.BitImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    ).save_pretrained(folder)
    return folder


def tiny_video_model(folder: Path, kind: str, frames: int = 4) -> Path:
    torch.manual_seed(2)
    if kind == "videomae":
        config = transformers.VideoMAEConfig(
            image_size=SIZE,
            patch_size=8,
            num_frames=frames,
            tubelet_size=2,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
        transformers.VideoMAEModel(config).save_pretrained(folder)
        transformers.VideoMAEVideoProcessor(
            size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
        ).save_pretrained(folder)
    else:
        config = transformers.VJEPA2Config(
            crop_size=SIZE,
            frames_per_clip=frames,
            tubelet_size=2,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            mlp_ratio=2.0,
            pred_hidden_size=32,
            pred_num_hidden_layers=1,
            pred_num_attention_heads=2,
            pred_num_mask_tokens=2,
        )
        transformers.VJEPA2Model(config).save_pretrained(folder)
        transformers.VJEPA2VideoProcessor(
            size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
        ).save_pretrained(folder)
    return folder


def tiny_open_clip_config(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "embed_dim": 24,
                "vision_cfg": {
                    "image_size": SIZE,
                    "layers": 1,
                    "width": 32,
                    "patch_size": 8,
                    "head_width": 16,
                },
                "text_cfg": {
                    "context_length": 8,
                    "vocab_size": 64,
                    "width": 32,
                    "heads": 2,
                    "layers": 1,
                },
            }
        )
    )
    return path


def test_timm_feature_is_timm_transform_and_forward(tmp_path: Path, make_video) -> None:
    import timm
    from PIL import Image

    torch.manual_seed(3)
    checkpoint = tmp_path / "test_vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), checkpoint)  # with its head
    config = load_config(
        None, ["--modalities", "rgb", "--device", "cpu", "--rgb.backbone", "timm:test_vit",
               "--rgb.weights", str(checkpoint)]
    )  # fmt: skip
    backbone = build_models(config).rgb
    frames = frames_of(make_video(num_frames=3, width=96, height=64))
    ours = backbone(torch.from_numpy(np.stack(frames)))
    reference = timm.create_model("test_vit", num_classes=0).eval()
    state = torch.load(checkpoint)
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(reference))
    with torch.no_grad():
        expected = reference(torch.stack([transform(Image.fromarray(f)) for f in frames]))
    assert ours.shape == (3, reference.num_features) == (3, backbone.feature_dim)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert backbone.record["revision"].startswith("sha256:")


def test_open_clip_embedding_is_open_clip_preprocess_and_encode_image(
    tmp_path: Path, make_video
) -> None:
    import open_clip
    from PIL import Image

    config_file = tiny_open_clip_config(tmp_path / "tiny-clip.json")
    backbone = build_foundation_backbone(name=f"open_clip:{config_file}", weights="none", seed=5)
    before = build_foundation_backbone(
        name=f"open_clip:{config_file}", weights="none", seed=5, projection=False
    )
    frames = frames_of(make_video(num_frames=2, width=96, height=64))
    open_clip.add_model_config(config_file)
    torch.manual_seed(5)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip")
    model.eval()
    images = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    with torch.no_grad():
        expected = model.encode_image(images)
    ours = backbone(torch.from_numpy(np.stack(frames)))
    assert backbone.feature_dim == 24 and before.feature_dim == 32
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    unprojected = before(torch.from_numpy(np.stack(frames)))
    torch.testing.assert_close(unprojected @ model.visual.proj, expected, rtol=0, atol=1e-4)


def test_open_clip_weights_from_a_local_checkpoint_file(tmp_path: Path, make_video) -> None:
    """--rgb.weights FILE: an OpenCLIP checkpoint file (a state dict) loaded through the real
    loading code; the features are those of the saved model, its hash recorded."""
    import open_clip
    from PIL import Image

    config_file = tiny_open_clip_config(tmp_path / "tiny-clip-file.json")
    open_clip.add_model_config(config_file)
    torch.manual_seed(7)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip-file")
    checkpoint = tmp_path / "tiny-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    backbone = build_foundation_backbone(
        name=f"open_clip:{config_file}", weights=str(checkpoint), seed=0
    )
    frames = frames_of(make_video(num_frames=2, width=96, height=64))
    with torch.no_grad():
        expected = model.eval().encode_image(
            torch.stack([preprocess(Image.fromarray(f)) for f in frames])
        )
    torch.testing.assert_close(
        backbone(torch.from_numpy(np.stack(frames))), expected, rtol=0, atol=1e-5
    )
    assert backbone.record["weights"] == str(checkpoint)
    assert backbone.record["revision"].startswith("sha256:")


def test_hf_image_model_is_processor_and_pooler_output(tmp_path: Path, make_video) -> None:
    folder = tiny_dinov2(tmp_path / "dinov2")
    backbone = build_foundation_backbone(name="hf:dinov2", weights=str(folder))
    frames = frames_of(make_video(num_frames=2, width=96, height=64))
    model = transformers.AutoModel.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        inputs = processor(images=frames, return_tensors="pt")
        expected = model(**inputs).pooler_output
    torch.testing.assert_close(
        backbone(torch.from_numpy(np.stack(frames))), expected, atol=1e-5, rtol=0
    )
    assert backbone.feature_dim == 32 and backbone.clip_length == 1
    assert backbone.model.config._attn_implementation == "sdpa"  # PyTorch's fused attention
    # A wrong model type is refused, naming both.
    with pytest.raises(ValueError, match="hf:dinov2"):
        build_foundation_backbone(name="hf:videomae", weights=str(folder))


@pytest.mark.parametrize("kind", ["videomae", "vjepa2"])
def test_hf_video_model_is_processor_and_mean_of_tokens(
    tmp_path: Path, make_video, kind: str
) -> None:
    folder = tiny_video_model(tmp_path / kind, kind)
    backbone = build_foundation_backbone(name=f"hf:{kind}", weights=str(folder), clip_stride=2)
    assert (backbone.clip_length, backbone.clip_stride) == (4, 2)
    frames = frames_of(make_video(num_frames=8, width=96, height=64))
    clip = np.stack([frames[n - 1] for n in clip_frames(7, length=4, stride=2)])  # 1, 3, 5, 7
    model = transformers.AutoModel.from_pretrained(folder).eval()
    processor = transformers.AutoVideoProcessor.from_pretrained(folder)
    with torch.no_grad():
        inputs = processor(videos=[list(clip)], return_tensors="pt")
        if kind == "vjepa2":
            hidden = model(**inputs, skip_predictor=True).last_hidden_state
        else:
            hidden = model(**inputs).last_hidden_state
    ours = backbone(torch.from_numpy(clip)[None])
    torch.testing.assert_close(ours, hidden.mean(1), atol=1e-5, rtol=0)
    assert backbone.model.config._attn_implementation == "sdpa"  # PyTorch's fused attention
    if kind == "videomae":  # the position table fixes the clip length
        with pytest.raises(ValueError, match="num_frames"):
            build_foundation_backbone(name="hf:videomae", weights=str(folder), clip_length=8)


def _extract(video_dir: Path | None, out: Path, folder: Path, *extra: str) -> None:
    source = ["--videos", str(video_dir)] if video_dir is not None else []
    arguments = [
        *source, "--out", str(out), "--modalities", "rgb",
        "--device", "cpu", "--rgb.backbone", "hf:videomae", "--rgb.weights", str(folder),
        "--rgb.clip_stride", "2", "--batch_size", "4", "--num_workers", "0", "--threads", "1",
        "--decode.width", "64", "--decode.height", "48", "--progress", "false", *extra,
    ]  # fmt: skip
    assert main(arguments) == 0


def _stored(path: Path, video: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return handle[f"{video}/frames"][()], handle[f"{video}/features"][()]


def _streaming_extractor(backbone: str, folder: Path) -> StreamingExtractor:
    """The demo's streaming extractor of ``backbone`` (a tiny local model in ``folder``), as
    ``_extract``'s offline runs use it: clip stride 2, 64x48 frames."""
    config = load_config(
        None,
        ["--modalities", "rgb", "--device", "cpu", "--rgb.backbone", backbone,
         "--rgb.weights", str(folder), "--rgb.clip_stride", "2", "--decode.width", "64",
         "--decode.height", "48"],
    )  # fmt: skip
    return StreamingExtractor(config)


def test_video_backbone_sees_only_the_past_offline_sparse_and_streaming(
    tmp_path: Path, make_video, capsys
) -> None:
    from tests.feature_extraction.conftest import coded_frame, write_video

    folder = tiny_video_model(tmp_path / "videomae", "videomae")
    # Two videos equal up to frame 20 and different after it.
    same = [coded_frame(i + 1, shift=i) for i in range(40)]
    other = same[:20] + [255 - coded_frame(i + 1, shift=3 * i) for i in range(20, 40)]
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "P01_01.mp4", np.stack(same))
    write_video(tmp_path / "videos" / "P01_02.mp4", np.stack(other))
    _extract(tmp_path / "videos", tmp_path / "dense", folder)
    _, first = _stored(tmp_path / "dense" / "rgb.h5", "P01_01")
    frames, second = _stored(tmp_path / "dense" / "rgb.h5", "P01_02")
    assert frames.tolist() == list(range(1, 41))
    # A frame after f changes nothing at f; the later frames differ.
    np.testing.assert_array_equal(first[:20], second[:20])
    assert not np.allclose(first[20:], second[20:], atol=1e-3)

    # Streaming (a ring buffer) gives the offline features.
    extractor = _streaming_extractor("hf:videomae", folder)
    pushed = []
    for index, image in enumerate(frames_of(tmp_path / "videos" / "P01_01.mp4", size=None)):
        features = extractor.push(image, compute=index % 3 == 0)
        if features:
            pushed.append((index, features["rgb"]))
    for index, vector in pushed:
        np.testing.assert_allclose(vector, first[index], rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="video backbone"):
        extractor.push_stored(np.zeros((48, 64, 3), np.uint8))

    # Sparse extraction decodes each clip's earlier frames: same features at the needed frames.
    annotations = tmp_path / "training.csv"
    annotations.write_text("1,P01_01,36,40,0,0,0\n")
    capsys.readouterr()
    _extract(tmp_path / "videos", tmp_path / "sparse", folder, "--annotations", str(annotations),
             "--only-needed", "--rgb.clip_length", "4")  # fmt: skip
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "sparse extraction" in x]
    assert "each RGB clip also decodes the 3 frames before its last, 2 apart" in line
    assert "flow" not in line
    sparse_frames, sparse = _stored(tmp_path / "sparse" / "rgb.h5", "P01_01")
    needed = sorted({min(max(int(f), 1), 40) for f in anticipation_frames(36)})
    assert sparse_frames.tolist() == needed
    np.testing.assert_allclose(sparse, first[sparse_frames - 1], rtol=0, atol=1e-5)

    # The recorded attributes.
    with h5py.File(tmp_path / "dense" / "rgb.h5", "r") as handle:
        provenance = json.loads(handle.attrs["provenance"])
    record = provenance["backbone"]
    assert record["backbone"] == "hf:videomae" and record["dim"] == 32
    assert (record["clip_length"], record["clip_stride"]) == (4, 2)
    assert record["weights"] == str(folder) and record["revision"].startswith("sha256:")
    assert record["library"]["transformers"] == transformers.__version__
    assert "VideoMAEVideoProcessor" in record["preprocessing"]
    assert "mean" in record["pooling"]
    # The precision the features were computed at (auto resolved: bf16 on a CPU with native
    # bf16, else float32), which the config hash includes when it is not float32.
    ran = resolve_precision("auto", torch.device("cpu"))
    assert (record["precision"], record["precision_setting"]) == (ran, "auto")
    assert provenance["settings"].get("precision", "32-true") == ran


def test_vjepa2_streaming_equals_offline_and_sees_only_the_past(tmp_path: Path) -> None:
    """V-JEPA 2 (tiny, 4-frame clips at stride 2): the streaming ring buffer gives the offline
    features within 1e-4, and changing the frames after f changes nothing at f."""
    from tests.feature_extraction.conftest import coded_frame, write_video

    folder = tiny_video_model(tmp_path / "vjepa2", "vjepa2")
    same = [coded_frame(i + 1, shift=i) for i in range(40)]
    other = same[:20] + [255 - coded_frame(i + 1, shift=3 * i) for i in range(20, 40)]
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "P01_01.mp4", np.stack(same))
    write_video(tmp_path / "videos" / "P01_02.mp4", np.stack(other))
    _extract(tmp_path / "videos", tmp_path / "out", folder, "--rgb.backbone", "hf:vjepa2")
    _, first = _stored(tmp_path / "out" / "rgb.h5", "P01_01")
    _, second = _stored(tmp_path / "out" / "rgb.h5", "P01_02")
    np.testing.assert_array_equal(first[:20], second[:20])
    assert not np.allclose(first[20:], second[20:], atol=1e-3)
    extractor = _streaming_extractor("hf:vjepa2", folder)
    for index, image in enumerate(frames_of(tmp_path / "videos" / "P01_01.mp4", size=None)):
        vector = extractor.push(image)["rgb"]
        np.testing.assert_allclose(vector, first[index], rtol=0, atol=1e-4)


def test_frame_folders_read_the_clip_frames_of_sparse_frames(tmp_path: Path, make_video) -> None:
    from PIL import Image

    folder = tiny_video_model(tmp_path / "videomae", "videomae")
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    images = frames_of(make_video(num_frames=30, width=64, height=48))
    for index, image in enumerate(images, start=1):
        Image.fromarray(image).save(frames_dir / f"P01_01_frame_{index:010d}.jpg", quality=95)
    annotations = tmp_path / "training.csv"
    annotations.write_text("1,P01_01,28,30,0,0,0\n")
    base = ["--frames", str(tmp_path / "frames")]
    _extract(None, tmp_path / "dense", folder, *base)
    _extract(None, tmp_path / "sparse", folder, *base, "--annotations",
             str(annotations), "--only-needed")  # fmt: skip
    _, dense = _stored(tmp_path / "dense" / "rgb.h5", "P01_01")
    frames, sparse = _stored(tmp_path / "sparse" / "rgb.h5", "P01_01")
    assert len(frames) > 1
    np.testing.assert_allclose(sparse, dense[frames - 1], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("module", "package", "backbone"),
    [
        ("timm", "timm", "timm:test_vit"),
        ("open_clip", "open_clip_torch", "open_clip:ViT-B-32"),
        ("transformers", "transformers", "hf:dinov2"),
    ],
)
def test_a_missing_library_names_the_extra(monkeypatch, module, package, backbone) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import <module> raises ImportError
    with pytest.raises(ImportError) as caught:
        build_foundation_backbone(name=backbone, weights="none")
    message = str(caught.value)
    assert "\n" not in message and package in message
    assert "pip install -e '.[backbones]'" in message


@pytest.mark.parametrize(
    ("backbone", "weights"),
    [
        ("hf:vjepa2", "nobody/no-such-vjepa2@main"),
        ("timm:test_vit", "nobody/no-such-timm-model"),
        ("open_clip:ViT-B-32", "nobody/no-such-clip"),
    ],
)
def test_an_offline_hub_model_is_one_line_naming_it(monkeypatch, backbone, weights) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError) as caught:
        build_foundation_backbone(name=backbone, weights=weights)
    message = str(caught.value)
    assert "\n" not in message and weights in message
    assert "--rgb.weights PATH" in message


@pytest.mark.parametrize("family", ["timm", "open_clip"])
def test_a_local_checkpoint_of_another_architecture_is_one_line_naming_both(
    tmp_path: Path, family: str
) -> None:
    """A user's checkpoint file that is not --rgb.backbone's architecture (e.g. clip.yaml's
    ViT-B-16 with a ViT-L/14 file): one line naming the file, the backbone and the option to
    change, not timm's screen of size mismatches or OpenCLIP's bare AssertionError."""
    import open_clip
    import timm

    if family == "timm":
        checkpoint = tmp_path / "model.safetensors"
        from safetensors.torch import save_file

        save_file(timm.create_model("test_vit").state_dict(), checkpoint)
        backbone = "timm:vit_tiny_patch16_224"
    else:
        open_clip.add_model_config(tiny_open_clip_config(tmp_path / "tiny-clip-other.json"))
        checkpoint = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(open_clip.create_model("tiny-clip-other").state_dict(), checkpoint)
        backbone = "open_clip:ViT-S-32"
    with pytest.raises(ValueError) as caught:
        build_foundation_backbone(name=backbone, weights=str(checkpoint))
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500
    assert message.startswith(f"--rgb.weights {checkpoint} does not fit --rgb.backbone {backbone}")
    assert f"--rgb.backbone {family}:<architecture>" in message


def test_foundation_backbones_are_rgb_only_and_use_their_own_preprocessing() -> None:
    with pytest.raises(ValueError, match="flow takes"):
        build_models(load_config(None, ["--modalities", "flow", "--device", "cpu",
                                        "--flow.method", "dis", "--flow.backbone",
                                        "timm:test_vit", "--flow.weights", "none"]))  # fmt: skip
    config = load_config(None, ["--modalities", "rgb", "--device", "cpu", "--rgb.backbone",
                                "timm:test_vit", "--rgb.weights", "none",
                                "--rgb.input_size", "[32, 32]"])  # fmt: skip
    with pytest.raises(ValueError, match="own preprocessing"):
        build_models(config)


CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "extract"


def _library_features(name: str, weights: Path, frames: list[np.ndarray]) -> torch.Tensor:
    """The library's own preprocessing + forward of every frame (image models) or of the
    causal clip ending at every frame (video models: 4 frames at the configs' stride 4)."""
    from PIL import Image

    with torch.no_grad():
        if name == "clip":
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(
                weights.stem.removesuffix("-weights"), pretrained=str(weights)
            )
            images = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
            return model.eval().encode_image(images)
        model = transformers.AutoModel.from_pretrained(weights).eval()
        if name == "dinov2":
            processor = transformers.AutoImageProcessor.from_pretrained(weights)
            return model(**processor(images=frames, return_tensors="pt")).pooler_output
        processor = transformers.AutoVideoProcessor.from_pretrained(weights)
        clips = [
            [frames[n - 1] for n in clip_frames(f, length=4, stride=4)]
            for f in range(1, len(frames) + 1)
        ]
        inputs = processor(videos=clips, return_tensors="pt")
        extra = {"skip_predictor": True} if name == "vjepa2" else {}
        return model(**inputs, **extra).last_hidden_state.mean(1)


@pytest.mark.parametrize("name", ["dinov2", "clip", "videomae", "vjepa2"])
def test_shipped_foundation_configs_write_the_library_features_from_local_weights(
    tmp_path: Path, make_video, name: str
) -> None:
    """rulstm-extract -c configs/extract/<name>.yaml --rgb.weights <local folder or file>
    writes the library's preprocessing + forward of each decoded frame (fp32, <= 1e-5): tiny
    random models of the same type saved to tmp_path (OpenCLIP: a checkpoint file of a tiny
    model config, given as --rgb.backbone), loaded by path."""
    import open_clip

    arguments = ["-c", str(CONFIGS / f"{name}.yaml")]
    if name == "dinov2":
        weights = tiny_dinov2(tmp_path / "model")
    elif name == "clip":
        config_file = tiny_open_clip_config(tmp_path / "tiny-clip-cfg.json")
        open_clip.add_model_config(config_file)
        torch.manual_seed(9)
        model = open_clip.create_model("tiny-clip-cfg")
        weights = tmp_path / "tiny-clip-cfg-weights.pt"
        torch.save(model.state_dict(), weights)
        arguments += ["--rgb.backbone", f"open_clip:{config_file}"]
    else:
        weights = tiny_video_model(tmp_path / "model", name)
        arguments += ["--rgb.clip_length", "4"]  # the tiny models' clip length
    video = make_video("videos/P01_01.mp4", num_frames=6, width=96, height=64)
    out = tmp_path / "out"
    arguments += [
        "--videos", str(tmp_path / "videos"), "--out", str(out), "--rgb.weights", str(weights), "--device", "cpu", "--num_workers", "0",
        "--threads", "1", "--batch_size", "2", "--progress", "false", "--precision", "32",
    ]  # fmt: skip
    assert main(arguments) == 0
    frames, features = _stored(out / "rgb.h5", "P01_01")
    config = load_config(CONFIGS / f"{name}.yaml")
    assert frames.tolist() == [1, 2, 3, 4, 5, 6]
    decoded = frames_of(video, size=(config.decode.width, config.decode.height))
    expected = _library_features(name, weights, decoded)
    np.testing.assert_allclose(features, expected.numpy(), rtol=0, atol=1e-5)
    assert features.shape[1] == (24 if name == "clip" else 32)
    with h5py.File(out / "rgb.h5", "r") as handle:
        record = json.loads(handle.attrs["provenance"])["backbone"]
    backbone = f"open_clip:{config_file}" if name == "clip" else config.rgb.backbone
    assert record["backbone"] == backbone and record["dim"] == features.shape[1]
    assert record["weights"] == str(weights) and record["revision"].startswith("sha256:")
    assert record["precision"] == "32-true"


@pytest.mark.slow
def test_two_cpu_processes_with_ddp_extract_a_video_backbone_like_one(
    tmp_path: Path, make_video
) -> None:
    """Two gloo ranks deal the videos (disjoint) and merge one output equal to a single
    process, with a video foundation backbone (causal clips across chunk boundaries)."""
    import os
    import subprocess

    folder = tiny_video_model(tmp_path / "videomae", "videomae")
    for name, frames in (("A", 30), ("B", 20), ("C", 25)):
        make_video(f"videos/{name}.mp4", num_frames=frames)
    repo = Path(__file__).resolve().parents[2]
    environment = dict(os.environ, WANDB_MODE="disabled")
    environment["PYTHONPATH"] = os.pathsep.join([str(repo), environment.get("PYTHONPATH", "")])
    options = [
        "--modalities", "rgb", "--device", "cpu", "--rgb.backbone", "hf:videomae",
        "--rgb.weights", str(folder), "--rgb.clip_stride", "2", "--batch_size", "4",
        "--num_workers", "0", "--threads", "1", "--decode.width", "64", "--decode.height", "48",
        "--progress", "false",
    ]  # fmt: skip
    distributed = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "feature_extraction.cli", "--videos", str(tmp_path / "videos"),
         "--out", str(distributed), *options, "--devices", "2"],
        env=environment, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2 (videos per rank: 2, 1)" in result.stdout
    single = tmp_path / "single"
    assert main(["--videos", str(tmp_path / "videos"), "--out", str(single), *options]) == 0
    for video in ("A", "B", "C"):
        frames, features = _stored(distributed / "rgb.h5", video)
        single_frames, single_features = _stored(single / "rgb.h5", video)
        assert frames.tolist() == single_frames.tolist()
        np.testing.assert_allclose(features, single_features, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_torchrun_as_documented_extracts_a_video_backbone_like_one_process(
    tmp_path: Path, make_video
) -> None:
    """The documented torchrun command (docs: several machines), on one machine: 2 gloo
    processes, a tiny random VideoMAE built from a local config (--rgb.weights none), 3
    videos; the merged output equals a single process."""
    import os
    import shutil
    import socket
    import subprocess

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    folder = tiny_video_model(tmp_path / "videomae", "videomae")
    for name, frames in (("A", 30), ("B", 21), ("C", 24)):
        make_video(f"videos/{name}.mp4", num_frames=frames)
    repo = Path(__file__).resolve().parents[2]
    environment = dict(os.environ, WANDB_MODE="disabled")
    environment["PYTHONPATH"] = os.pathsep.join([str(repo), environment.get("PYTHONPATH", "")])
    options = [
        "--videos", str(tmp_path / "videos"), "--modalities", "rgb", "--device", "cpu",
        "--rgb.backbone", f"hf:{folder}", "--rgb.weights", "none", "--rgb.clip_stride", "2",
        "--batch_size", "4", "--num_workers", "0", "--threads", "1", "--decode.width", "64",
        "--decode.height", "48", "--progress", "false",
    ]  # fmt: skip
    result = subprocess.run(
        [torchrun, "--nnodes", "1", "--nproc_per_node", "2", "--node_rank", "0",
         "--master_addr", "127.0.0.1", "--master_port", port, "-m", "feature_extraction.cli",
         *options, "--out", str(tmp_path / "torchrun"), "--devices", "2", "--num_nodes", "1"],
        env=environment, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2 (videos per rank: 2, 1)" in result.stdout
    assert main([*options, "--out", str(tmp_path / "single")]) == 0
    for video in ("A", "B", "C"):
        frames, features = _stored(tmp_path / "torchrun" / "rgb.h5", video)
        single_frames, single_features = _stored(tmp_path / "single" / "rgb.h5", video)
        assert frames.tolist() == single_frames.tolist()
        np.testing.assert_array_equal(features, single_features)


def test_a_video_model_run_says_clips_its_clip_rule_and_precision(
    tmp_path: Path, make_video, capsys, monkeypatch
) -> None:
    """What a user of a slow video backbone reads: the device and precision before loading,
    the clip rule once loaded, and progress, speed and summary counted in clips."""
    folder = tiny_video_model(tmp_path / "vjepa2", "vjepa2")
    make_video("videos/P01_01.mp4", num_frames=12, fps=30)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    arguments = [
        "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
        "--modalities", "rgb", "--device", "cpu", "--precision", "32",
        "--rgb.backbone", "hf:vjepa2", "--rgb.weights", str(folder), "--rgb.clip_stride", "2",
        "--batch_size", "4", "--num_workers", "0", "--threads", "1",
        "--decode.width", "64", "--decode.height", "48", "--progress", "true",
    ]  # fmt: skip
    assert main(arguments) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"loading the models: rgb hf:vjepa2 (weights {folder}) (for cpu, 32-true)"
    assert lines[1].endswith(": rgb 32-d from clips of 4 frames (stride 2)")
    assert "12/12 clips" in captured.err and "clip/s" in captured.err
    assert any(line.startswith("clips: 12 extracted in ") for line in lines), lines
    assert "clips/s after a" in captured.out
    # --progress false: no bars, transformers' "Loading weights" neither (a log of our lines).
    quiet = [*arguments[:-1], "false", "--overwrite", "true"]
    assert main(quiet) == 0
    assert "Loading weights" not in capsys.readouterr().err
