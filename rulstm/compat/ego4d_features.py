"""Import Ego4D's released per-video features into the HDF5 feature layout.

The Ego4D CLI's feature datasets (``--datasets omnivore_video_swinl`` or
``slowfast8x8_r101_k400``; the CLI writes them to ``<output_directory>/<v1|v2>/<dataset>/``)
hold one ``<video_uid>.pt`` per parent video: a float tensor ``(num_windows, dim)`` (Omnivore
Swin-L 1536, SlowFast 2304; the dimension is read from the files) computed by Ego4D's feature
extractor on the 30 fps canonical videos with windows of 32 frames (1.0667 s) at a stride of
16 frames (0.5333 s). Source: the Ego4D "Features" page (https://ego4d-data.org/docs/data/features/,
"Window Size and Stride are in frames") and the extraction configs
``ego4d/features/configs/{slowfast_r101_8x8,omnivore_video}.yaml`` of facebookresearch/Ego4d
(``fps: 30``, ``frame_window: 32``, ``stride: 16``), which use pytorchvideo's
``UniformClipSampler(..., backpad_last=True)``: window ``i`` covers 0-based frames
``[16 i, 16 i + 32)``; when the last regular window does not reach the end of the video, one
more window covering the video's last 32 frames is added (back-padded); a video shorter than
one window gives a single window. The row count is therefore

    n = num_frames - 32;  rows = 1 if n < 0 else n // 16 + 1 + (1 if n % 16 else 0)

which needs the video's length: ``video_metadata.num_frames`` (else ``duration_sec`` x 30)
from Ego4D's metadata file ``ego4d.json``. A file with another row count is refused, naming
the video and both counts.

Placement (past only): each window is stored at its **last** frame (1-based: window ``i`` at
``16 i + 32``, the back-padded one at ``num_frames``), so that a step reading frame ``f`` gets
the latest window that ends at or before ``f`` and never one covering later frames. End
frames that coincide are stored once (the later window is kept).

Before the first window ends (frames 1 .. 31) nothing has been summarised yet. With
``before_first="zeros"`` (the default) a zero vector is stored at frame 1, so such steps read
zeros ("nothing observed"); with ``"error"`` nothing is added and the lookup raises the
feature store's missing-frame error naming the video and frame.

Videos already complete in the output are skipped, so an interrupted import resumes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from epic_protocol.ego4d_lta import read_lta_annotations
from epic_protocol.errors import DataError
from epic_protocol.features import FeatureFileWriter, complete_videos

WINDOW_FRAMES = 32
STRIDE_FRAMES = 16
EGO4D_FEATURE_FPS = 30.0
BeforeFirst = Literal["zeros", "error"]


class Ego4DFeatureError(DataError, ValueError):
    """An unusable feature or metadata file; the message names the file and the video."""


def expected_windows(
    num_frames: int, window: int = WINDOW_FRAMES, stride: int = STRIDE_FRAMES
) -> int:
    """Rows the extractor writes for a video of ``num_frames`` frames (see module doc)."""
    extra = num_frames - window
    if extra < 0:
        return 1
    return extra // stride + 1 + (1 if extra % stride else 0)


def window_end_frames(
    num_frames: int, window: int = WINDOW_FRAMES, stride: int = STRIDE_FRAMES
) -> np.ndarray:
    """int64 [rows]: the 1-based last frame of each window, in row order."""
    extra = num_frames - window
    if extra < 0:
        return np.array([num_frames], dtype=np.int64)
    ends = np.arange(extra // stride + 1, dtype=np.int64) * stride + window
    if extra % stride:
        ends = np.append(ends, num_frames)  # the back-padded last window
    return ends


def read_video_lengths(metadata: str | Path, fps: float = EGO4D_FEATURE_FPS) -> dict[str, int]:
    """``{video_uid: num_frames}`` from Ego4D's ``ego4d.json`` (``videos[].video_metadata.
    num_frames``, else ``round(duration_sec * fps)``)."""
    path = Path(metadata)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Ego4DFeatureError(f"{path}: not valid JSON ({error})") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list):
        raise Ego4DFeatureError(f"{path}: expected Ego4D metadata with a 'videos' list")
    lengths: dict[str, int] = {}
    for position, video in enumerate(videos):
        uid = video.get("video_uid") if isinstance(video, dict) else None
        if not uid:
            raise Ego4DFeatureError(f"{path}: videos[{position}] has no video_uid")
        frames = (video.get("video_metadata") or {}).get("num_frames")
        if frames is None and video.get("duration_sec") is not None:
            frames = round(float(video["duration_sec"]) * fps)
        if frames is None or int(frames) < 1:
            raise Ego4DFeatureError(
                f"{path}: video {uid}: no video_metadata.num_frames or duration_sec"
            )
        lengths[str(uid)] = int(frames)
    return lengths


def parent_videos(annotations: Iterable[str | Path]) -> list[str]:
    """The parent ``video_uid`` of every clip of these ``fho_lta_*.json`` files, sorted (the
    videos whose features an LTA run reads with ``keying: video``).

    Raises:
        LTAAnnotationError / FileNotFoundError: an unreadable file (named).
    """
    videos = {
        action.video_uid
        for path in annotations
        for actions in read_lta_annotations(path).values()
        for action in actions
    }
    return sorted(videos)


def placed_rows(
    features: np.ndarray,
    num_frames: int,
    *,
    video: str,
    source: str | Path,
    before_first: BeforeFirst = "zeros",
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (int64 [R], 1-based, increasing) and features (float32 [R, D]) to store.

    Raises:
        Ego4DFeatureError: not a 2-d tensor, a NaN/inf value, or a row count other than the
            extractor's for ``num_frames`` (named: the file, the video, the window).
    """
    if features.ndim != 2:
        raise Ego4DFeatureError(
            f"{source}: video {video}: expected a (windows, dim) tensor, got {features.shape}"
        )
    finite = np.isfinite(features)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise Ego4DFeatureError(
            f"{source}: video {video}: window {row} is not finite "
            f"({int((~finite).sum())} NaN/inf values in the file)"
        )
    expected = expected_windows(num_frames)
    if len(features) != expected:
        raise Ego4DFeatureError(
            f"{source}: video {video}: {len(features)} windows, but a {num_frames}-frame "
            f"video gives {expected} (32-frame windows, stride 16, back-padded last): "
            "wrong metadata or another extraction"
        )
    ends = window_end_frames(num_frames)
    # Keep the last window of each end frame (np.unique keeps the first: search reversed).
    reversed_ends = ends[::-1]
    _, first_in_reversed = np.unique(reversed_ends, return_index=True)
    keep = np.sort(len(ends) - 1 - first_in_reversed)
    frames, rows = ends[keep], features[keep].astype(np.float32)
    if before_first == "zeros" and frames[0] > 1:
        frames = np.concatenate([[1], frames])
        rows = np.concatenate([np.zeros((1, rows.shape[1]), np.float32), rows])
    elif before_first not in ("zeros", "error"):
        raise ValueError(f"before_first must be 'zeros' or 'error', got {before_first!r}")
    return frames.astype(np.int64), rows


def _load_tensor(path: Path) -> np.ndarray:
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unreadable or non-tensor pickle: name the file
        reason = f"{type(error).__name__}: {' '.join(str(error).split()) or 'no detail'}"
        if not zipfile.is_zipfile(path):  # torch.save has written zip archives since 1.6
            reason = f"not a torch.save zip archive, cut short or another format; {reason}"
        raise Ego4DFeatureError(f"{path}: not a saved tensor ({reason})") from None
    if not isinstance(value, torch.Tensor):
        raise Ego4DFeatureError(f"{path}: holds a {type(value).__name__}, not a tensor")
    return value.float().numpy()


@dataclass(frozen=True)
class Ego4DImportSummary:
    imported: int
    skipped: int

    def __str__(self) -> str:
        return f"{self.imported} videos imported, {self.skipped} already complete"


def import_ego4d_features(
    features_dir: str | Path,
    output: str | Path,
    *,
    metadata: str | Path | Mapping[str, int],
    modality: str = "rgb",
    videos: Iterable[str] | None = None,
    before_first: BeforeFirst = "zeros",
    dtype: str = "float32",
) -> Ego4DImportSummary:
    """Import ``<video_uid>.pt`` files of ``features_dir`` into ``output`` (resumable).

    Args:
        features_dir: the Ego4D CLI's feature folder (e.g. ``ego4d_data/v2/omnivore_video_swinl``).
        output: the ``.h5`` feature file (keyed by ``video_uid``, 30 fps).
        metadata: ``ego4d.json`` or ``{video_uid: num_frames}``.
        modality: the modality name recorded in the file.
        videos: import only these video uids (e.g. the parents of the LTA clips).
        before_first: what a step before the first window reads (see the module doc).
        dtype: ``float32`` or ``float16`` storage.

    Raises:
        Ego4DFeatureError: a file that is not a (windows, dim) tensor, a row count that does
            not match the video's length, or sizes that differ between videos (named).
            A video without a length in the metadata.
        FileNotFoundError: no such folder, or a requested video without a file.
    """
    folder = Path(features_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such feature folder")
    lengths = dict(metadata) if isinstance(metadata, Mapping) else read_video_lengths(metadata)
    files = {path.stem: path for path in sorted(folder.glob("*.pt"))}
    wanted = list(videos) if videos is not None else list(files)
    absent = [uid for uid in wanted if uid not in files]
    if absent:
        raise FileNotFoundError(f"{folder}: no {absent[0]}.pt ({len(absent)} videos missing)")
    if not wanted:
        raise FileNotFoundError(f"{folder}: no <video_uid>.pt files")
    output = Path(output)
    done = complete_videos(output) if output.exists() else set()
    no_length = [uid for uid in wanted if uid not in lengths]
    if no_length:
        raise Ego4DFeatureError(
            f"{metadata if not isinstance(metadata, Mapping) else 'metadata'}: no length for "
            f"video {no_length[0]} ({len(no_length)} videos): the placement of the back-padded "
            "last window needs it"
        )
    todo = [uid for uid in wanted if uid not in done]
    imported = 0
    writer: FeatureFileWriter | None = None
    try:
        for uid in todo:
            features = _load_tensor(files[uid])
            frames, rows = placed_rows(
                features, lengths[uid], video=uid, source=files[uid], before_first=before_first
            )
            if writer is None:
                writer = FeatureFileWriter(
                    output,
                    modality=modality,
                    dim=rows.shape[1],
                    fps=EGO4D_FEATURE_FPS,
                    dtype=dtype,  # type: ignore[arg-type]
                    provenance={
                        "source": "ego4d released features",
                        "folder": folder.name,
                        "window_frames": WINDOW_FRAMES,
                        "stride_frames": STRIDE_FRAMES,
                        "placement": "window end frame (1-based)",
                        "before_first": before_first,
                    },
                )
            elif rows.shape[1] != writer.dim:
                raise Ego4DFeatureError(
                    f"{files[uid]}: video {uid}: {rows.shape[1]}-d features, the others are "
                    f"{writer.dim}-d"
                )
            writer.write_video(uid, frames, rows, num_frames=lengths[uid])
            imported += 1
    finally:
        if writer is not None:
            writer.close()
    return Ego4DImportSummary(imported=imported, skipped=len(wanted) - len(todo))
