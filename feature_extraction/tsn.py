"""The RU-LSTM authors' TSN feature extraction: their preprocessing and checkpoint format.

Reference: the RU-LSTM repository's example extraction scripts (``FEATEXT/extract_example_rgb.py``,
``extract_example_flow.py``), which run a BN-Inception trained with TSN on EPIC-KITCHENS
(``TSN-rgb.pth.tar``, ``TSN-flow.pth.tar``) one image at a time. Restated:

* **RGB**: the 8-bit RGB image is resized to 256 x 454 (rows x columns) with PIL's bilinear
  filter (8-bit result), scaled to [0, 1] and back by 255 (as ``ToTensor`` then ``* 255``),
  reordered to BGR and reduced by the means 104, 117, 128 (B, G, R); no division.
* **Flow**: each 8-bit flow image (u or v, 128 = no motion, as TV-L1 flow clipped to +-20
  pixels and mapped to 0..255) is resized the same way as a grayscale image, scaled the
  same way and reduced by 128. The 10 input channels of frame ``t`` are u, v of flow images
  ``t-4 .. t``, oldest first; the stacking is the data side's (:mod:`feature_extraction.frames`,
  :mod:`feature_extraction.flow`).
* **Checkpoints**: ``{'state_dict': {'module.base_model.<layer>': tensor, ...,
  'module.new_fc.weight'/'bias': TSN classifier}}``. The prefix is dropped, the classifier
  ignored, and every BN-Inception tensor must be present with its shape (BatchNorm's
  ``num_batches_tracked`` counters, which the PyTorch 0.3-era checkpoints lack, may be absent).

The resize runs in PIL on the CPU (the reference's exact arithmetic; an 8-bit PIL resize rounds
differently from any float implementation). Inputs that already have the input size skip it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from epic_protocol.errors import DataError
from epic_protocol.pickles import numpy_scalar_globals
from feature_extraction.memory_format import channels_last_input

TSN_INPUT_SIZE = (256, 454)  # (rows, columns) of the reference's transforms.Resize
TSN_RGB_MEAN_BGR = (104.0, 117.0, 128.0)
TSN_FLOW_MEAN = 128.0

Preprocessing = Literal["torchvision", "tsn"]
TSNModality = Literal["rgb", "flow"]


class CheckpointError(DataError, ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


def pil_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of an 8-bit image: (H, W, 3) RGB or (H, W) gray -> ``size`` =
    (rows, columns), 8-bit, exactly as ``torchvision.transforms.Resize`` on a PIL image."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized)


def _resize_batch(
    images: torch.Tensor, size: tuple[int, int], modality: TSNModality
) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (B, C, rows, columns) uint8 through PIL (on the CPU)."""
    array = images.cpu().numpy()
    if modality == "rgb":
        out = np.stack(
            [pil_resize(image.transpose(1, 2, 0), size).transpose(2, 0, 1) for image in array]
        )  # B x (3, H, W) -> (H, W, 3) -> resized -> (3, rows, columns)
    else:
        out = np.stack(
            [np.stack([pil_resize(channel, size) for channel in stack]) for stack in array]
        )  # B x C x (H, W) -> (B, C, rows, columns)
    return torch.from_numpy(out).to(images.device)


class TSNBackbone(nn.Module):
    """A trunk behind the reference's TSN preprocessing (see the module docstring).

    ``forward``: (B, 3, H, W) RGB or (B, 2 * stack, H, W) flow images, uint8 (flow: 128 = no
    motion) -> (B, feature_dim) float32. Raises ``TypeError`` for other dtypes: the reference
    works on 8-bit images (set ``flow.quantize: true``).
    """

    #: float32 output bit-equal to the reference: ``channels_last: auto`` stays off.
    bit_exact = True
    #: Trunk input in channels-last memory format (``channels_last: true``).
    channels_last = False

    def __init__(
        self,
        *,
        trunk: nn.Module,
        feature_dim: int,
        modality: TSNModality,
        input_size: tuple[int, int] | None = TSN_INPUT_SIZE,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.modality = modality
        self.input_size = tuple(input_size) if input_size is not None else None
        if modality == "rgb":
            mean = torch.tensor(TSN_RGB_MEAN_BGR).view(1, 3, 1, 1)
        else:
            mean = torch.tensor([TSN_FLOW_MEAN]).view(1, 1, 1, 1)
        self.register_buffer("mean", mean)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(
                f"TSN preprocessing takes 8-bit images, got {images.dtype} (for flow, set "
                "flow.quantize: true)"
            )
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            images = _resize_batch(images, self.input_size, self.modality)
        # ToTensor's /255 then the reference's *255, kept for float32 bit-equality with it.
        x = images.float().div(255.0).mul(255.0)
        if self.modality == "rgb":
            x = x[:, [2, 1, 0]]  # RGB -> BGR, the Caffe model's channel order
        x = channels_last_input(x - self.mean, self.channels_last)
        return self.trunk(x).float().flatten(1)  # (B, D, ...) -> (B, D)


def read_tsn_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of a TSN checkpoint (or of a plain BN-Inception state dict):
    ``module.`` and ``base_model.`` prefixes dropped, the ``new_fc`` classifier left out.
    Raises :class:`CheckpointError` naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # Safe loading; numpy scalars (an epoch's accuracy, in some TRN/TSN files) are data.
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name.startswith("new_fc."):
            continue  # the TSN classifier head
        name = name[len("base_model.") :] if name.startswith("base_model.") else name
        if isinstance(value, torch.Tensor):
            state[name] = value
    return state


def load_backbone_strictly(model: nn.Module, path: str | Path, *, what: str) -> None:
    """Load a TSN checkpoint's backbone into ``model``: every tensor present with its shape,
    nothing else. Raises :class:`CheckpointError` naming the file and the first keys."""
    state = read_tsn_state_dict(path)
    expected = model.state_dict()
    optional = {key for key in expected if key.endswith("num_batches_tracked")}
    missing = [key for key in expected if key not in state and key not in optional]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} {tuple(state[key].shape)} (model {tuple(expected[key].shape)})"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong:
        problems = []
        if wrong:
            problems.append(f"wrong shapes: {', '.join(wrong[:3])}")
        if missing:
            problems.append(f"{len(missing)} missing keys, first {missing[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys, first {unexpected[:5]}")
        raise CheckpointError(
            f"{path} does not fit {what} (expected the TSN layout 'module.base_model.<layer>'): "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=False)  # strictness checked above (counters optional)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``inputs`` (B, C, H, W), given as
    the network sees them (after the preprocessing); returns ``model`` in eval mode.

    For random-weight networks (tests, demos without the authors' files): with the default
    initialisation the signal fades through BN-Inception's 69 layers, so that the features
    barely depend on the input (measured: a spread of 2e-6 across frames); with calibrated
    statistics each layer's output keeps unit scale and random features respond to their input.
    """
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in batchnorms]
    for module in batchnorms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average: exactly the statistics of ``inputs``
    model.train()
    model(inputs)
    for module, momentum in zip(batchnorms, momenta):
        module.momentum = momentum
    return model.eval()


def save_tsn_checkpoint(
    path: str | Path, backbone: nn.Module, *, num_classes: int = 8, seed: int = 0
) -> Path:
    """Write ``backbone`` in the authors' TSN checkpoint layout, with a random ``new_fc``
    head of ``num_classes`` (tests, and random-weight runs of the released-model demo)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(getattr(backbone, "feature_dim", 1024), num_classes)
    state = {f"module.base_model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"module.new_fc.{k}": v for k, v in head.state_dict().items()})
    path = Path(path)
    torch.save({"epoch": 0, "arch": "BNInception", "state_dict": state}, path)
    return path
