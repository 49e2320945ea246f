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

Three modules, one role each: this one is the command line and the server's life (what to
serve, the launch options, SIGTERM handled as Ctrl-C, the work folder removed at the end);
:mod:`rulstm_apps.web_page` is the Gradio page; :mod:`rulstm_apps.web_request` is the whole
request as a plain function (video in -> MP4 + JSONL + chart data out, with the upload limits),
built on :func:`rulstm_apps.demo_loop.run_demo`. Gradio is an optional extra
(``pip install -e ".[web]"``), imported only to build the page. Requests queue (one runs at a
time), each works in its own temporary folder that is removed once its files have been handed
to Gradio, and the app binds to 127.0.0.1 unless told.
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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from epic_protocol.annotations import read_id_list
from epic_protocol.errors import ArgumentParser, SetupError, cli_main
from rulstm_apps.demo_inputs import check_extraction_options
from rulstm_apps.web_page import build_app, gradio_available
from rulstm_apps.web_request import WebLimits, WebModel

log = logging.getLogger(__name__)


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
    check_extraction_options([*unknown, *extraction], prog="rulstm-web")
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


def check_backbone_names(model: WebModel) -> None:
    """Refuse, before serving, checkpoints trained on features of another backbone than the
    extraction config computes (by the backbone's name: the full check, weights included,
    runs in each request once the models are built, as in ``rulstm-demo``).

    Raises:
        WebSetupError: one line naming the checkpoint and both backbones, or an unreadable
            checkpoint or extraction config.
    """
    from epic_protocol.backbones import CHECKPOINT_KEY, describe
    from rulstm.checkpoints import read_checkpoint
    from rulstm_apps.demo_errors import DemoError
    from rulstm_apps.demo_inputs import load_extract_config

    try:
        config = load_extract_config(model.extract_config, model.extract_overrides)
    except DemoError as error:
        raise WebSetupError(str(error)) from None
    computed = {m: getattr(config, m).backbone for m in ("rgb", "flow") if m in config.modalities}
    for checkpoint in model.checkpoints:
        try:
            trained = read_checkpoint(checkpoint).get(CHECKPOINT_KEY) or {}
        except ValueError as error:
            raise WebSetupError(str(error)) from None
        for modality, record in trained.items():
            if not record or modality not in computed:
                continue
            if record.get("backbone") != computed[modality]:
                raise WebSetupError(
                    f"{checkpoint} was trained on {modality} features of {describe(record)} "
                    f"but the extraction config {model.extract_config or '(defaults)'} computes "
                    f"them with {computed[modality]}; serve it with --{modality}.backbone "
                    f"{record.get('backbone')} (and its weights), or serve another checkpoint"
                )


def prepare(argv: Sequence[str], *, work_root: str | Path | None = None) -> PreparedApp:
    """Parse ``argv`` and build the app without launching it (tests launch it in a thread)."""
    namespace, overrides = parse(argv)
    if not gradio_available():
        raise WebSetupError('the web demo needs Gradio: pip install -e ".[web]"')
    try:
        serving = _serving(namespace, overrides)
    except FileNotFoundError as error:
        raise WebSetupError(str(error)) from None
    for checkpoint in serving.model.checkpoints:
        if not Path(checkpoint).is_file():
            raise WebSetupError(f"checkpoint not found: {checkpoint}")
    check_backbone_names(serving.model)
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
                serve(prepared)
            finally:
                shutil.rmtree(prepared.work_root, ignore_errors=True)
    except Terminated:  # asked to stop (kill, docker stop, systemd): a normal end
        pass
    return 0


def serve(prepared: PreparedApp) -> None:
    """Launch the app and wait until its server stops. Ctrl-C or SIGTERM (raised as
    KeyboardInterrupt, :func:`sigterm_as_interrupt`) closes the server quietly and ends
    normally, as Gradio's own wait does, but without its "Keyboard interruption in main
    thread... closing server." line: the log line of :func:`sigterm_as_interrupt` says it."""
    app = prepared.app
    try:
        app.launch(prevent_thread_lock=True, **prepared.launch_kwargs)
        while app.is_running:
            time.sleep(0.1)
    except Terminated:
        raise
    except KeyboardInterrupt:  # Ctrl-C while serving: a normal end, as with Gradio's wait
        log.info("interrupted: stopping the server and removing the work folder")
    finally:
        app.close(verbose=False)


if __name__ == "__main__":
    sys.exit(main())
