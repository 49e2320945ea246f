"""The tensor preprocessing path of the foundation backbones (``rgb.preprocessing: tensor``):
its measured difference from the library's transform (pixels and features) for a tiny timm
ViT, a tiny OpenCLIP model, a tiny Hugging Face image model and tiny VideoMAE / V-JEPA 2
models; its parameters read from the library; the refusals; the record and the config hash.

The bounds asserted are the measured ones: against timm's and OpenCLIP's PIL transforms a pixel
differs by at most 2/255 (torch's antialiased filters in float against PIL's fixed-point ones,
each pass rounded to uint8; the frames here have hard 0/255 edges, the worst case for bicubic);
against the Hugging Face torchvision backend the input is the same to float rounding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_extraction.backbones import build_rgb_backbone
from feature_extraction.clips import clip_frames
from feature_extraction.config import load_config
from feature_extraction.foundation import build_foundation_backbone
from feature_extraction.foundation_tensor import (
    UnsupportedTransformError,
    distinct_frames,
    from_hf_processor,
    from_torchvision,
)
from feature_extraction.models import build_models, provenance
from tests.feature_extraction.test_foundation import (
    frames_of,
    tiny_dinov2,
    tiny_open_clip_config,
    tiny_video_model,
)

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

#: Measured bound of the tensor path against the PIL transforms, in 1/255 steps.
PIL_BOUND = 2.0


def pixel_steps(ours: torch.Tensor, library: torch.Tensor, std: tuple[float, ...]) -> torch.Tensor:
    """|difference| of two normalised inputs (N, 3, h, w), un-normalised, in 1/255 steps."""
    return (ours - library).abs() * torch.tensor(std).view(1, 3, 1, 1) * 255


def both(name: str, **kwargs) -> tuple:
    library = build_foundation_backbone(name=name, **kwargs)
    tensor = build_foundation_backbone(name=name, tensor_preprocessing=True, **kwargs)
    return library, tensor


def test_timm_tensor_path_is_within_2_of_255_of_timm_transform(make_video) -> None:
    from PIL import Image

    library, tensor = both("timm:test_vit", weights="none", seed=3)
    transform = timm.data.create_transform(
        **timm.data.resolve_model_data_config(library.model)
    )  # what the default path applies: resize 168 bicubic, centre crop 160
    frames = frames_of(make_video(num_frames=3, width=96, height=64))
    batch = torch.from_numpy(np.stack(frames))
    expected = torch.stack([transform(Image.fromarray(f)) for f in frames])
    ours = tensor.tensor_inputs(batch)
    assert ours.shape == expected.shape == (3, 3, 160, 160)
    steps = pixel_steps(ours, expected, tensor.tensor_transform.std)
    assert steps.max() <= PIL_BOUND + 1e-3
    assert steps.mean() < 0.05  # almost every pixel is equal
    with torch.no_grad():
        difference = (tensor(batch) - library(batch)).abs().max()
    assert difference < 1e-3, difference  # measured 2.9e-4 (features of norm 8)
    record = tensor.record["preprocessing"]
    assert record.startswith("tensor") and "bicubic" in record and "168" in record
    assert library.record["preprocessing"].startswith("timm create_transform")


def test_open_clip_tensor_path_is_within_2_of_255_of_open_clip_preprocess(
    tmp_path: Path, make_video
) -> None:
    from PIL import Image

    config_file = tiny_open_clip_config(tmp_path / "tiny-clip-tensor.json")
    library, tensor = both(f"open_clip:{config_file}", weights="none", seed=5)
    open_clip.add_model_config(config_file)
    _, _, preprocess = open_clip.create_model_and_transforms("tiny-clip-tensor")
    frames = frames_of(make_video(num_frames=2, width=96, height=64))
    batch = torch.from_numpy(np.stack(frames))
    expected = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    ours = tensor.tensor_inputs(batch)
    assert ours.shape == expected.shape
    steps = pixel_steps(ours, expected, tensor.tensor_transform.std)
    assert steps.max() <= PIL_BOUND + 1e-3 and steps.mean() < 0.05
    with torch.no_grad():
        assert (tensor(batch) - library(batch)).abs().max() < 1e-3  # measured 1.6e-4


def test_hf_image_tensor_path_equals_the_processor(tmp_path: Path, make_video) -> None:
    folder = tiny_dinov2(tmp_path / "dinov2")
    library, tensor = both("hf:dinov2", weights=str(folder))
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    frames = frames_of(make_video(num_frames=3, width=96, height=64))
    batch = torch.from_numpy(np.stack(frames))
    expected = processor(images=frames, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(tensor.tensor_inputs(batch), expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(tensor(batch), library(batch), rtol=0, atol=1e-5)
    assert "BitImageProcessor" in tensor.record["preprocessing"]


@pytest.mark.parametrize("kind", ["videomae", "vjepa2"])
def test_hf_video_tensor_path_equals_the_video_processor(
    tmp_path: Path, make_video, kind: str
) -> None:
    folder = tiny_video_model(tmp_path / kind, kind)
    library, tensor = both(f"hf:{kind}", weights=str(folder), clip_stride=2)
    processor = transformers.AutoVideoProcessor.from_pretrained(folder)
    frames = frames_of(make_video(num_frames=8, width=96, height=64))
    # Three overlapping causal clips (ending at 6, 7, 8): 7 distinct frames among 12.
    clips = np.stack(
        [np.stack([frames[n - 1] for n in clip_frames(f, length=4, stride=2)]) for f in (6, 7, 8)]
    )
    batch = torch.from_numpy(clips)
    out = processor(videos=[list(c) for c in clips], return_tensors="pt")
    expected = out["pixel_values_videos" if kind == "vjepa2" else "pixel_values"]
    ours = tensor.tensor_inputs(batch)
    assert ours.shape == expected.shape == (3, 4, 3, 32, 32)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(tensor(batch), library(batch), rtol=0, atol=1e-5)
    assert tensor.input_key == ("pixel_values_videos" if kind == "vjepa2" else "pixel_values")


def test_a_clip_batch_preprocesses_each_distinct_frame_once() -> None:
    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (5, 6, 8, 3), dtype=torch.uint8, generator=generator)
    order = torch.tensor([0, 1, 0, 2, 1, 3, 3, 4, 0])
    distinct, inverse = distinct_frames(pool[order])
    assert len(distinct) == 5
    assert torch.equal(distinct[inverse], pool[order])
    # Frames equal in the sampled bytes but not in full stay apart.
    twin = pool[0].clone()
    twin[-1, -1, -1] ^= 1
    distinct, inverse = distinct_frames(torch.stack([pool[0], twin, pool[0]]))
    assert len(distinct) == 2 and inverse.tolist() == [0, 1, 0]


def test_the_parameters_are_read_from_the_library() -> None:
    transform = timm.data.create_transform(
        input_size=(3, 48, 48), interpolation="bilinear", crop_pct=0.8, mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
    )  # fmt: skip
    read = from_torchvision(transform, "timm:x", "timm")
    assert (read.resize, read.crop, read.interpolation) == ((60,), (48, 48), "bilinear")
    assert read.mean == pytest.approx((0.1, 0.2, 0.3)) and read.std == pytest.approx(
        (0.4, 0.5, 0.6)
    )
    processor = transformers.VJEPA2VideoProcessor(crop_size={"height": 64, "width": 64})
    read = from_hf_processor(processor, "hf:vjepa2")
    # V-JEPA 2's processor derives its resize from the crop (64 * 256 / 224 = 73).
    assert (read.resize, read.crop, read.interpolation) == ((73,), (64, 64), "bilinear")
    assert read.scale == pytest.approx(1 / 255) and read.crop_rounding == "floor"


@pytest.mark.parametrize(
    "make",
    [
        lambda: timm.data.create_transform(input_size=(3, 32, 32), crop_mode="border"),
        lambda: timm.data.create_transform(input_size=(3, 32, 32), interpolation="nearest"),
        lambda: open_clip.image_transform(32, is_train=False, resize_mode="longest"),
    ],
)
def test_a_step_not_reproduced_is_refused_naming_the_backbone(make) -> None:
    with pytest.raises(UnsupportedTransformError) as caught:
        from_torchvision(make(), "timm:some_model", "timm")
    message = str(caught.value)
    assert "timm:some_model" in message and "\n" not in message


def test_a_processor_with_its_own_steps_is_refused() -> None:
    class Custom(transformers.BitImageProcessor):
        def _preprocess(self, *args, **kwargs):  # a step the tensor path does not know
            return super()._preprocess(*args, **kwargs)

    with pytest.raises(UnsupportedTransformError, match="hf:custom.*overrides _preprocess"):
        from_hf_processor(Custom(), "hf:custom")
    with pytest.raises(UnsupportedTransformError, match="longest_edge"):
        from_hf_processor(
            transformers.BitImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}), "hf:x"
        )
    with pytest.raises(ValueError, match="family:architecture backbones"):
        build_rgb_backbone(name="resnet18", weights="none", preprocessing="tensor")


def test_tensor_preprocessing_is_recorded_and_hashed_the_default_hash_unchanged(
    tmp_path: Path,
) -> None:
    folder = tiny_dinov2(tmp_path / "dinov2")
    base = ["--modalities", "rgb", "--device", "cpu", "--precision", "32",
            "--rgb.backbone", "hf:dinov2", "--rgb.weights", str(folder)]  # fmt: skip
    records = {
        label: provenance(build_models(load_config(None, base + extra)), "rgb")
        for label, extra in [
            ("default", []),
            ("explicit", ["--rgb.preprocessing", "torchvision"]),
            ("tensor", ["--rgb.preprocessing", "tensor"]),
        ]
    }
    # The default leaves the setting out of the hash (files written before it keep theirs).
    assert "preprocessing" not in records["default"]["settings"]["rgb"]
    assert records["default"]["config_hash"] == records["explicit"]["config_hash"]
    assert records["tensor"]["settings"]["rgb"]["preprocessing"] == "tensor"
    assert records["tensor"]["config_hash"] != records["default"]["config_hash"]
    assert records["tensor"]["backbone"]["preprocessing"].startswith("tensor (batched torch")
    assert records["default"]["backbone"]["preprocessing"].startswith("BitImageProcessor")


def test_rulstm_extract_with_tensor_preprocessing_streams_as_offline(tmp_path: Path) -> None:
    """``--rgb.preprocessing tensor`` through the real extraction (V-JEPA 2, causal clips): on a
    CPU the same features as the processor's path, a config hash of its own, and streaming
    (a ring buffer) equal to offline within 1e-4."""
    import h5py

    from feature_extraction.streaming import StreamingExtractor
    from tests.feature_extraction.conftest import coded_frame, write_video
    from tests.feature_extraction.test_foundation import _extract

    folder = tiny_video_model(tmp_path / "vjepa2", "vjepa2")
    (tmp_path / "videos").mkdir()
    write_video(
        tmp_path / "videos" / "P01_01.mp4",
        np.stack([coded_frame(i + 1, shift=i) for i in range(24)]),
    )
    stored = {}
    for label, extra in [("library", []), ("tensor", ["--rgb.preprocessing", "tensor"])]:
        out = tmp_path / label
        _extract(tmp_path / "videos", out, folder, "--rgb.backbone", "hf:vjepa2", *extra)
        with h5py.File(out / "rgb.h5", "r") as handle:
            stored[label] = (handle["P01_01/features"][()], json.loads(handle.attrs["provenance"]))
    np.testing.assert_allclose(stored["tensor"][0], stored["library"][0], rtol=0, atol=1e-5)
    assert stored["tensor"][1]["config_hash"] != stored["library"][1]["config_hash"]
    assert stored["tensor"][1]["backbone"]["preprocessing"].startswith("tensor")
    config = load_config(
        None,
        ["--modalities", "rgb", "--device", "cpu", "--rgb.backbone", "hf:vjepa2",
         "--rgb.weights", str(folder), "--rgb.clip_stride", "2", "--decode.width", "64",
         "--decode.height", "48", "--rgb.preprocessing", "tensor"],
    )  # fmt: skip
    extractor = StreamingExtractor(config)
    for index, image in enumerate(frames_of(tmp_path / "videos" / "P01_01.mp4", size=None)):
        vector = extractor.push(image)["rgb"]
        np.testing.assert_allclose(vector, stored["tensor"][0][index], rtol=0, atol=1e-4)


def test_a_pil_backend_processor_is_within_2_of_255() -> None:
    """A Hugging Face processor on its PIL backend (resize by PIL, floor-offset crop; odd sizes
    so that the offsets' rounding matters): within the PIL bound."""
    from tests.feature_extraction.conftest import coded_frame

    if not hasattr(transformers, "BitImageProcessorPil"):
        pytest.skip("this transformers has no PIL-backend BitImageProcessor")
    processor = transformers.BitImageProcessorPil(
        size={"shortest_edge": 37}, crop_size={"height": 31, "width": 31}
    )
    read = from_hf_processor(processor, "hf:bit")
    frames = [coded_frame(i, width=97, height=64) for i in range(3)]
    expected = torch.as_tensor(
        np.array(processor(images=frames, return_tensors="pt")["pixel_values"])
    )
    ours = read(torch.from_numpy(np.stack(frames)))
    assert ours.shape == expected.shape == (3, 3, 31, 31)
    assert pixel_steps(ours, expected, read.std).max() <= PIL_BOUND + 1e-3
