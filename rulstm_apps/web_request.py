"""The request of ``rulstm-web`` as a plain function: an uploaded clip in, the overlaid MP4,
the JSON Lines predictions and the chart rows out.

:func:`check_upload` refuses what the page cannot take (no video, too long, too big, not a
video) with a :class:`WebInputError` whose message is shown on the page as it is;
:func:`handle_request` runs :func:`rulstm_apps.demo_loop.run_demo` on the clip in its own
temporary folder (removed on error, else by :meth:`WebResult.cleanup`). No Gradio here: the
page (:mod:`rulstm_apps.web_page`) and the server (:mod:`rulstm_apps.web`) are built on it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from epic_protocol.errors import DataError

#: The anticipation times the page offers (RU-LSTM's 8 steps of 0.25 s).
HORIZONS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


class WebInputError(DataError, ValueError):
    """A request the app refuses (no video, too long, too big, not a video); the message is
    shown on the page as it is."""


@dataclass(frozen=True)
class WebModel:
    """What every request runs: the demo's model and extraction options."""

    checkpoints: tuple[Path, ...]
    extract_config: Path | None = None
    extract_overrides: tuple[str, ...] = ()
    actions: str | None = None
    verb_classes: str | None = None
    noun_classes: str | None = None
    annotations: str | None = None  # ground truth of the sample clips (by video id)
    modality: tuple[str, ...] | None = None
    device: str | None = None


@dataclass(frozen=True)
class WebLimits:
    """Refused beyond these: clip length in seconds and upload size in megabytes."""

    max_seconds: float = 60.0
    max_upload_mb: float = 100.0


@dataclass
class WebResult:
    """One request's outputs, in ``workdir`` until :meth:`cleanup`.

    ``probabilities``: rows ``{"time_s", "action", "probability"}`` of the top actions (the
    ``top_k`` with the highest mean probability over the clip) at the chosen anticipation
    time, one per step; ``weights``: rows ``{"time_s", "modality", "weight"}`` of the MATT
    weights at that time (empty for a branch or an average).
    """

    video: Path
    predictions: Path
    probabilities: list[dict[str, Any]]
    weights: list[dict[str, Any]]
    summary: str
    workdir: Path
    steps: int = 0
    notes: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def check_upload(video: str | Path | None, limits: WebLimits) -> Any:
    """The upload's VideoInfo, or a :class:`WebInputError` saying what is wrong with it."""
    from feature_extraction import VideoError, probe_video

    if video is None or str(video) == "":
        raise WebInputError("Upload a video (or choose a sample) first.")
    path = Path(video)
    if not path.is_file():
        raise WebInputError(f"The uploaded file {path.name} is gone; upload it again.")
    megabytes = path.stat().st_size / 2**20
    if megabytes > limits.max_upload_mb:
        raise WebInputError(
            f"{path.name} is {megabytes:.1f} MB; this demo accepts files up to "
            f"{limits.max_upload_mb:g} MB."
        )
    try:
        info = probe_video(path)
    except VideoError:
        raise WebInputError(
            f"{path.name} could not be read as a video. Upload a video file (MP4, MKV, "
            "WebM, AVI, MOV)."
        ) from None
    if info.duration_s > limits.max_seconds + 1e-6:
        raise WebInputError(
            f"{path.name} lasts {info.duration_s:.1f} s; this demo takes clips up to "
            f"{limits.max_seconds:g} s. Trim it and upload again."
        )
    return info


def handle_request(
    video: str | Path | None,
    *,
    model: WebModel,
    limits: WebLimits = WebLimits(),
    horizon: float = 1.0,
    top_k: int = 5,
    work_root: str | Path | None = None,
    progress: bool = False,
) -> WebResult:
    """Run the demo on one uploaded clip.

    Returns the overlaid MP4, the JSONL predictions and the chart rows (see
    :class:`WebResult`), written in a new folder under ``work_root`` (default: the system's
    temporary folder) that the caller removes with :meth:`WebResult.cleanup`.

    Raises:
        WebInputError: no video, a file that is not a readable video, a clip longer than
            ``limits.max_seconds`` (by its metadata, or counted while decoding when it has
            none, e.g. a raw H.264 stream) or bigger than ``limits.max_upload_mb``, an anticipation
            time or top-k the model cannot give, or any unusable input the demo names. On
            error the request's folder is already removed.
    """
    from rulstm_apps.demo_errors import ClipTooLongError, DemoError
    from rulstm_apps.demo_loop import DemoOptions, run_demo

    if not any(abs(horizon - h) < 1e-9 for h in HORIZONS):
        raise WebInputError(f"The anticipation time must be one of {list(HORIZONS)} s.")
    if not 1 <= int(top_k) <= 20:
        raise WebInputError("Top-k must be between 1 and 20.")
    check_upload(video, limits)
    if work_root is not None:
        Path(work_root).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rulstm-web-", dir=work_root))
    options = DemoOptions(
        video=Path(video),
        checkpoint=model.checkpoints,
        out=workdir / "anticipation.mp4",
        predictions_out=workdir / "predictions.jsonl",
        extract_config=model.extract_config,
        extract_overrides=model.extract_overrides,
        actions=model.actions,
        verb_classes=model.verb_classes,
        noun_classes=model.noun_classes,
        annotations=model.annotations if _has_video(model.annotations, Path(video)) else None,
        modality=model.modality,
        device=model.device,
        horizon=float(horizon),
        top_k=int(top_k),
        progress=progress,
        max_seconds=limits.max_seconds,  # also for clips whose duration is unknown
    )
    collected: list[tuple[float, Any, dict[str, float] | None]] = []

    def on_step(frame: int, fps: float, prediction: Any) -> None:
        index = prediction.index_at(horizon)
        weights = (
            {name: float(w[index]) for name, w in prediction.weights.items()}
            if prediction.weights
            else None
        )
        collected.append((frame / fps, prediction.probabilities[index].clone(), weights))

    try:
        summary = run_demo(options, on_step=on_step)
    except ClipTooLongError:
        shutil.rmtree(workdir, ignore_errors=True)
        raise WebInputError(
            f"{Path(video).name} lasts more than {limits.max_seconds:g} s (counted while "
            f"decoding: the file does not say how long it is); this demo takes clips up to "
            f"{limits.max_seconds:g} s. Trim it and upload again."
        ) from None
    except (DemoError, FileNotFoundError) as error:
        shutil.rmtree(workdir, ignore_errors=True)
        raise WebInputError(_first_line(str(error))) from None
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    from rulstm_apps.labels import ActionNames

    names = ActionNames.from_files(
        num_classes=int(collected[0][1].numel()) if collected else 1,
        actions=model.actions,
        verb_classes=model.verb_classes,
        noun_classes=model.noun_classes,
    )
    probabilities, weights = chart_rows(collected, names=names, top_k=int(top_k))
    text = (
        f"{summary.frames} frames, {summary.steps} anticipation steps, "
        f"{summary.wall_s:.1f} s of processing."
    )
    if not collected:
        text += " The clip is shorter than one step: no anticipation."
    return WebResult(
        video=options.out,
        predictions=options.predictions_out,
        probabilities=probabilities,
        weights=weights,
        summary=text,
        workdir=workdir,
        steps=summary.steps,
    )


def chart_rows(
    collected: Sequence[tuple[float, Any, dict[str, float] | None]], *, names: Any, top_k: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Long-format rows of the two charts from ``(time_s, probabilities (C,), weights)`` per
    step: the ``top_k`` actions with the highest mean probability, and the MATT weights."""
    if not collected:
        return [], []
    import torch

    stacked = torch.stack([p for _, p, _ in collected])  # (steps, C)
    best = stacked.mean(0).topk(min(top_k, stacked.shape[1])).indices.tolist()
    probabilities = [
        {"time_s": time_s, "action": names.action(a), "probability": float(p[a])}
        for a in best
        for time_s, p, _ in collected
    ]
    weights = [
        {"time_s": time_s, "modality": name, "weight": value}
        for time_s, _, step_weights in collected
        if step_weights
        for name, value in step_weights.items()
    ]
    return probabilities, weights


def _has_video(annotations: str | None, video: Path) -> bool:
    """Whether ``annotations`` (a CSV path) mentions the clip's video id (samples only)."""
    if annotations is None or not Path(annotations).is_file():
        return False
    return video.stem in Path(annotations).read_text(errors="replace")


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unusable input"
