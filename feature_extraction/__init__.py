"""Video -> HDF5 features (RGB, optical flow, objects). See ``rulstm-extract --help``.

The public API (imported lazily, so ``import feature_extraction`` stays cheap):

* :func:`extract` (= :func:`feature_extraction.runner.run_extraction`) with
  :class:`RunOptions` and an :class:`ExtractConfig` (:func:`load_config` reads a YAML file
  plus command-line style overrides); it returns a :class:`Summary`.
* :func:`probe_video`, :func:`decode_video` and :class:`VideoError`: the frame-rate-fixed
  decoding (1-based frame numbers at the target fps).
* :class:`StreamingExtractor`: frame-by-frame features for online use (the demo).
* :func:`resolve_device`: ``"auto"`` / ``"cpu"`` / ``"cuda:N"`` -> ``torch.device``;
  :func:`resolve_precision`: the precision an extraction runs at on a device (``auto``: bf16
  where native, see :mod:`epic_protocol.precision`).
* :func:`build_models`, :class:`FeatureComputer`, :class:`CausalFlow`: the stages one by one
  (benchmarks, custom pipelines).
* :class:`BNInception`, :class:`TSNBackbone`, :func:`save_tsn_checkpoint`,
  :func:`calibrate_batchnorm`, :class:`CheckpointError`: the TSN network of the RU-LSTM features,
  its reference preprocessing and the authors' checkpoint format; :func:`find_frame_videos`,
  :class:`FrameReader` and :class:`FrameError`: JPEG frame folders (``--frames``; the demo's
  :meth:`StreamingExtractor.push_stored`).

Apps and scripts import these names only; everything else is internal.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ExtractConfig": "feature_extraction.config",
    "load_config": "feature_extraction.config",
    "RunOptions": "feature_extraction.planning",
    "PlanningError": "feature_extraction.planning",
    "Summary": "feature_extraction.runner",
    "run_extraction": "feature_extraction.runner",
    "VideoError": "feature_extraction.video_files",
    "VideoInfo": "feature_extraction.video_files",
    "decode_video": "feature_extraction.video",
    "probe_video": "feature_extraction.video_files",
    "StreamingExtractor": "feature_extraction.streaming",
    "resolve_device": "feature_extraction.models",
    "resolve_precision": "feature_extraction.models",
    # The stages one by one, for benchmarks and custom pipelines.
    "build_models": "feature_extraction.models",
    "backbone_record": "feature_extraction.models",
    "build_foundation_backbone": "feature_extraction.foundation",
    "FeatureComputer": "feature_extraction.models",
    "CausalFlow": "feature_extraction.flow",
    # The RU-LSTM authors' TSN features: network, preprocessing, checkpoints, frame folders.
    "BNInception": "feature_extraction.bninception",
    "TSNBackbone": "feature_extraction.tsn",
    "CheckpointError": "feature_extraction.tsn",
    "calibrate_batchnorm": "feature_extraction.tsn",
    "save_tsn_checkpoint": "feature_extraction.tsn",
    "FrameError": "feature_extraction.frames",
    "FrameReader": "feature_extraction.frames",
    "find_frame_videos": "feature_extraction.frames",
}
_ALIASES = {"extract": ("feature_extraction.runner", "run_extraction")}

__all__ = sorted([*_PUBLIC, *_ALIASES])


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _ALIASES:
        module, attribute = _ALIASES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'feature_extraction' has no attribute {name!r}")
