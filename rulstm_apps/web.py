"""``rulstm-web``: the streaming demo as a local web page (Gradio).

Upload a clip (or pick a sample), choose the anticipation time and top-k; the page shows the
extraction's progress, then the overlaid MP4 (H.264, plays in the browser), the top actions'
probabilities over time, the MATT weights over time, and downloads of the MP4 and the JSON
Lines predictions (one line per step, as ``rulstm-demo --predictions-out``).

Examples::

    rulstm-web                                   # the quickstart's models and a sample clip
    rulstm-web --checkpoint fusion.ckpt --extract-config configs/extract/cpu.yaml \\
        --actions actions.csv --port 7860
    rulstm-web --checkpoint rgb.ckpt --checkpoint flow.ckpt \\
        --extract-config configs/extract/rulstm_tsn.yaml --rgb.weights TSN-rgb.pth.tar ...

As for ``rulstm-demo``, options that are not the web app's own are extraction options.

Gradio is an optional extra (``pip install -e ".[web]"``); only :func:`build_app` and
:func:`main` import it. :func:`handle_request` is the whole request as a plain function
(video in -> MP4 + JSONL + chart data out), built on :func:`rulstm_apps.demo_loop.run_demo`.
Requests queue (one runs at a time), each works in its own temporary folder that is removed
once its files have been handed to Gradio, and the app binds to 127.0.0.1 unless told.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from epic_protocol.annotations import read_id_list
from epic_protocol.errors import ArgumentParser, DataError, SetupError, cli_main

log = logging.getLogger(__name__)

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
        index = min(range(len(prediction.times)), key=lambda i: abs(prediction.times[i] - horizon))
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


# --------------------------------------------------------------------------- the app
def build_app(
    model: WebModel,
    *,
    limits: WebLimits = WebLimits(),
    samples: Sequence[Path] = (),
    work_root: str | Path | None = None,
) -> Any:
    """The Gradio Blocks of the page (queued, one request at a time)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    import gradio as gr

    def respond(
        video: str | None,
        horizon: float,
        top_k: float,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's way to stream progress)
    ):
        progress(0, desc="extracting features and anticipating")
        try:
            result = handle_request(
                video,
                model=model,
                limits=limits,
                horizon=float(horizon),
                top_k=int(top_k),
                work_root=work_root,
                progress=True,
            )
        except WebInputError as error:
            yield None, None, None, None, f"**Cannot process this clip.** {error}"
            return
        except Exception:  # never a stack trace on the page; the log has it
            log.exception("request failed")
            yield None, None, None, None, "**Something went wrong.** The server log says what."
            return
        try:
            yield (
                str(result.video),
                _frame(result.probabilities, ["time_s", "action", "probability"]),
                _frame(result.weights, ["time_s", "modality", "weight"]),
                [str(result.video), str(result.predictions)],
                result.summary,
            )
        finally:
            # Gradio has copied the files into its cache when the generator is resumed (or
            # closed): this request's folder goes.
            result.cleanup()

    with gr.Blocks(title="RU-LSTM action anticipation", delete_cache=(600, 3600)) as app:
        gr.Markdown(
            "## Egocentric action anticipation (RU-LSTM)\n"
            "Upload a first-person clip (or pick a sample). Features are extracted frame by "
            "frame as a live system would see them, and every 0.25 s the model anticipates "
            f"the next action. Clips up to {limits.max_seconds:g} s and "
            f"{limits.max_upload_mb:g} MB."
        )
        with gr.Row():
            with gr.Column(scale=1):
                video_in = gr.Video(label="Clip", sources=["upload"], elem_id="clip")
                if samples:
                    gr.Examples(
                        examples=[[str(path)] for path in samples],
                        inputs=[video_in],
                        label="Samples",
                    )
                horizon = gr.Slider(
                    HORIZONS[0],
                    HORIZONS[-1],
                    value=1.0,
                    step=0.25,
                    label="Anticipation time (s)",
                    elem_id="horizon",
                )
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k actions", elem_id="top-k")
                run = gr.Button("Anticipate", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                video_out = gr.Video(label="Anticipated actions", elem_id="result-video")
                chart = gr.LinePlot(
                    x="time_s",
                    y="probability",
                    color="action",
                    title="Top actions at the chosen anticipation time",
                    x_title="time (s)",
                    y_title="probability",
                    elem_id="probabilities",
                )
                weights = gr.LinePlot(
                    x="time_s",
                    y="weight",
                    color="modality",
                    title="MATT modality weights",
                    x_title="time (s)",
                    y_title="weight",
                    elem_id="weights",
                )
                files = gr.File(label="Downloads", file_count="multiple", elem_id="downloads")
        run.click(
            respond,
            inputs=[video_in, horizon, top_k],
            outputs=[video_out, chart, weights, files, status],
            concurrency_limit=1,
        )
    app.queue(default_concurrency_limit=1, max_size=16)
    return app


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- quickstart mode
@dataclass(frozen=True)
class QuickstartServing:
    model: WebModel
    samples: tuple[Path, ...]


def quickstart_serving(folder: str | Path) -> QuickstartServing:
    """The fusion model, extraction config, vocabulary and first validation clip of a
    ``rulstm-quickstart`` output folder.

    Raises:
        FileNotFoundError: naming the missing file and how to make it (``make quickstart``).
    """
    from rulstm_apps.quickstart_steps import CONFIGS

    root = Path(folder)
    data = root / "data"
    needed = {
        "fusion checkpoint": root / "runs" / "fusion" / "checkpoints" / "best.ckpt",
        "palette": data / "objects.yaml",
        "actions": data / "actions.csv",
        "validation videos": data / "validation_videos.csv",
    }
    for what, path in needed.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found ({what}): run `make quickstart` (or rulstm-quickstart "
                f"--out {root}) first, or pass --checkpoint and --extract-config"
            )
    first = read_id_list(needed["validation videos"])
    samples = tuple(p for p in [data / "videos" / f"{first[0]}.mp4"] if first and p.is_file())
    verbs = data / "epic" / "EPIC_100_verb_classes.csv"
    nouns = data / "epic" / "EPIC_100_noun_classes.csv"
    named = verbs.is_file() and nouns.is_file()  # actions read 'verb noun'
    model = WebModel(
        checkpoints=(needed["fusion checkpoint"],),
        extract_config=CONFIGS / "extract" / "quickstart.yaml",
        extract_overrides=("--obj.palette", str(needed["palette"])),
        actions=str(needed["actions"]),
        verb_classes=str(verbs) if named else None,
        noun_classes=str(nouns) if named else None,
        annotations=str(data / "validation.csv"),
    )
    return QuickstartServing(model=model, samples=samples)


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="rulstm-web",
        description="Serve the streaming action-anticipation demo as a local web page "
        "(Gradio). Without --checkpoint it serves the quickstart's models and a sample clip "
        "from --quickstart-dir. Options that are not listed here are extraction options, as "
        "for rulstm-extract (--rgb.weights PATH, --modalities rgb flow, ...).",
    )
    add = parser.add_argument
    add(
        "--checkpoint",
        type=Path,
        action="append",
        default=None,
        help="RU-LSTM branch or fusion checkpoint; repeat for several branches (averaged).",
    )
    add("--extract-config", "--extract_config", type=Path, default=None, help="extraction YAML")
    add("--actions", default=None, help="actions.csv naming the classes")
    add("--verb-classes", "--verb_classes", default=None, help="EPIC verb classes CSV")
    add("--noun-classes", "--noun_classes", default=None, help="EPIC noun classes CSV")
    add("--modality", action="append", default=None, help="modality of each branch checkpoint")
    add("--device", default=None, help="auto, cpu, cuda, cuda:N")
    add(
        "--sample",
        type=Path,
        action="append",
        default=None,
        help="a video offered as a sample on the page (repeatable)",
    )
    add(
        "--quickstart-dir",
        "--quickstart_dir",
        type=Path,
        default=Path("quickstart_output"),
        help="quickstart output served without --checkpoint (default: %(default)s)",
    )
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add("--port", type=int, default=7860, help="port (default: %(default)s)")
    add(
        "--max-seconds",
        "--max_seconds",
        type=_positive_number,
        default=WebLimits.max_seconds,
        help="longest clip accepted, in seconds, counted while decoding (default: %(default)s)",
    )
    add(
        "--max-upload-mb",
        "--max_upload_mb",
        type=_positive_number,
        default=WebLimits.max_upload_mb,
        help="largest upload accepted, in MB of 2**20 bytes (default: %(default)s)",
    )
    return parser


def _positive_number(text: str) -> float:
    """A finite number above 0 (argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def upload_limit_bytes(max_upload_mb: float) -> int:
    """Gradio's ``max_file_size`` in bytes (it parses strings like ``"100mb"`` with integer
    digits only, so ``"2.5mb"`` or ``"1e+06mb"`` stop the app): at least one byte."""
    return max(1, math.ceil(max_upload_mb * 2**20))


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The app's options and the extraction options (everything else, as in rulstm-demo)."""
    argv = list(argv)
    extraction: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extraction = argv[:split], argv[split + 1 :]
    namespace, unknown = build_parser().parse_known_args(argv)
    return namespace, [*unknown, *extraction]


def _serving(namespace: argparse.Namespace, overrides: list[str]) -> QuickstartServing:
    if namespace.checkpoint:
        model = WebModel(
            checkpoints=tuple(namespace.checkpoint),
            extract_config=namespace.extract_config,
            extract_overrides=tuple(overrides),
            actions=namespace.actions,
            verb_classes=namespace.verb_classes,
            noun_classes=namespace.noun_classes,
            modality=tuple(namespace.modality) if namespace.modality else None,
            device=namespace.device,
        )
        return QuickstartServing(model=model, samples=tuple(namespace.sample or ()))
    serving = quickstart_serving(namespace.quickstart_dir)
    model = serving.model
    if overrides or namespace.device:
        model = dataclasses.replace(
            model,
            extract_overrides=(*model.extract_overrides, *overrides),
            device=namespace.device,
        )
    return QuickstartServing(model=model, samples=(*serving.samples, *(namespace.sample or ())))


@dataclass
class PreparedApp:
    """An app ready to launch: ``app.launch(**launch_kwargs)``; ``work_root`` holds the
    requests' folders (removed by :func:`main` when the server stops)."""

    app: Any
    launch_kwargs: dict[str, Any]
    work_root: Path


class WebSetupError(SetupError):
    """The app cannot start (a missing file, Gradio not installed); one line for the user."""


def prepare(argv: Sequence[str], *, work_root: str | Path | None = None) -> PreparedApp:
    """Parse ``argv`` and build the app without launching it (tests launch it in a thread)."""
    namespace, overrides = parse(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise WebSetupError('the web demo needs Gradio: pip install -e ".[web]"') from None
    try:
        serving = _serving(namespace, overrides)
    except FileNotFoundError as error:
        raise WebSetupError(str(error)) from None
    for checkpoint in serving.model.checkpoints:
        if not Path(checkpoint).is_file():
            raise WebSetupError(f"checkpoint not found: {checkpoint}")
    limits = WebLimits(max_seconds=namespace.max_seconds, max_upload_mb=namespace.max_upload_mb)
    root = Path(work_root) if work_root else Path(tempfile.mkdtemp(prefix="rulstm-web-"))
    try:
        app = build_app(serving.model, limits=limits, samples=serving.samples, work_root=root)
    except BaseException:  # an error, Ctrl-C or SIGTERM while building: no folder left
        if not work_root:
            shutil.rmtree(root, ignore_errors=True)
        raise
    launch_kwargs = {
        "server_name": namespace.host,
        "server_port": namespace.port,
        "max_file_size": upload_limit_bytes(namespace.max_upload_mb),
        "allowed_paths": sorted({str(Path(p).resolve().parent) for p in serving.samples}),
        "show_error": False,
    }
    return PreparedApp(app=app, launch_kwargs=launch_kwargs, work_root=root)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, ``docker stop``, systemd) raises
    KeyboardInterrupt in the main thread, as Ctrl-C does, so that the same clean-up runs; a
    second SIGTERM kills at once. Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log.info("SIGTERM: stopping the server and removing the work folder")
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli_main("rulstm-web")
def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM; the work folder, with any request's
    partial files, is removed either way). Exit codes: 0 served (also when stopped by
    SIGTERM), 1 the app cannot start (one line says why; ``--debug`` shows the traceback),
    2 bad arguments, 130 Ctrl-C before the server ran."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with sigterm_as_interrupt():
            prepared = prepare(sys.argv[1:] if argv is None else argv)
            try:
                prepared.app.launch(**prepared.launch_kwargs)
            finally:
                shutil.rmtree(prepared.work_root, ignore_errors=True)
    except Terminated:  # asked to stop (kill, docker stop, systemd): a normal end
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
