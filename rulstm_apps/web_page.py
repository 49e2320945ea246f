"""The page of ``rulstm-web``: the Gradio Blocks (upload, sliders, the overlaid video, the two
charts and the downloads) over :func:`rulstm_apps.web_request.handle_request`.

Gradio is an optional extra (``pip install -e ".[web]"``), imported only when
:func:`build_app` runs. Requests queue (one runs at a time) and each request's folder is
removed once Gradio has copied its files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rulstm_apps.web_request import HORIZONS, WebInputError, WebLimits, WebModel, handle_request

log = logging.getLogger(__name__)


def gradio_available() -> bool:
    """Whether Gradio (the ``[web]`` extra) can be imported."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        return False
    return True


def build_app(
    model: WebModel,
    *,
    limits: WebLimits = WebLimits(),
    samples: Sequence[Path] = (),
    work_root: str | Path | None = None,
) -> Any:
    """The Gradio Blocks of the page (queued, one request at a time).

    Raises:
        ImportError: Gradio is not installed (see :func:`gradio_available`).
    """
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
