"""rulstm-web's limits hold for every input and every option value: clips without a duration
(raw H.264 / MPEG-2 streams) are counted while decoding, a checkpoint naming a class that may
not be built is a message on the page, every accepted --max-upload-mb launches, and SIGTERM
cleans up like Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from epic_protocol.errors import UsageError
from rulstm.models.spec import NET_KEY
from rulstm_apps.demo import main as demo_main
from rulstm_apps.web import parse, prepare
from rulstm_apps.web_request import WebInputError, WebLimits, WebModel, handle_request

REPO = Path(__file__).resolve().parents[2]


def _elementary_stream(path: Path, *, codec: str, container: str, frames: int) -> Path:
    """A raw video stream (no container, no duration in any metadata), 64x48 at 30 fps."""
    import av

    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            image = np.full((48, 64, 3), (index * 7) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


@pytest.mark.parametrize(
    ("name", "codec", "container"),
    [("clip.h264", "libx264", "h264"), ("clip.m2v", "mpeg2video", "mpeg2video")],
)
def test_a_stream_without_duration_is_stopped_at_the_limit(
    web_model, tmp_path, one_thread, name, codec, container
):
    from feature_extraction import probe_video

    raw = _elementary_stream(tmp_path / name, codec=codec, container=container, frames=150)
    assert probe_video(raw).duration_s == 0  # what let it pass the check before decoding
    work_root = tmp_path / "work"
    with pytest.raises(WebInputError, match=rf"{name} lasts more than 1 s \(counted while"):
        handle_request(raw, model=web_model, limits=WebLimits(max_seconds=1.0),
                       work_root=work_root)  # fmt: skip
    assert list(work_root.iterdir()) == []


def test_a_checkpoint_naming_os_system_is_a_message(web_model, tiny_video, tmp_path, capsys):
    marker = tmp_path / "ran.marker"
    evil = tmp_path / "evil.ckpt"
    torch.save(
        {NET_KEY: {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}},
        evil,
    )
    model = WebModel(checkpoints=(evil,), extract_config=web_model.extract_config,
                     extract_overrides=web_model.extract_overrides)  # fmt: skip
    with pytest.raises(WebInputError, match=rf"{evil}: refused to build 'os.system'"):
        handle_request(tiny_video, model=model, work_root=tmp_path / "work")
    code = demo_main(["--video", str(tiny_video), "--checkpoint", str(evil),
                      "--out", str(tmp_path / "demo.mp4"), "--progress", "false"])  # fmt: skip
    assert code == 1
    assert f"rulstm-demo: error: {evil}: refused to build 'os.system'" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("value", ["2.5", "1000000", "0.0001", "100"])
def test_every_accepted_upload_size_launches(make_checkpoint, tmp_path, value):
    pytest.importorskip("gradio", reason="the [web] extra is not installed")
    prepared = prepare(["--checkpoint", str(make_checkpoint("fusion")), "--max-upload-mb", value,
                        "--port", str(_free_port())], work_root=tmp_path / "work")  # fmt: skip
    try:  # "2.5mb" or "1e+06mb" stopped the launch ("Invalid file size unit")
        prepared.app.launch(prevent_thread_lock=True, **prepared.launch_kwargs)
    finally:
        prepared.app.close()
    limit = prepared.launch_kwargs["max_file_size"]  # bytes
    assert isinstance(limit, int) and limit >= max(1, int(float(value) * 2**20))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "many"])
def test_unusable_limits_are_argument_errors(value):
    for option in ("--max-upload-mb", "--max-seconds"):
        with pytest.raises(UsageError, match=option):
            parse(["--checkpoint", "fusion.ckpt", option, value])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_removes_the_work_folder(make_checkpoint, tmp_path):
    """The server stopped with SIGTERM (kill, docker stop, systemd) removes its work folder,
    an in-flight request's partial files included, as Ctrl-C does."""
    pytest.importorskip("gradio", reason="the [web] extra is not installed")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}  # fmt: skip
    port = _free_port()
    command = [sys.executable, "-m", "rulstm_apps.web", "--checkpoint",
               str(make_checkpoint("fusion")), "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        for line in server.stdout:
            # Gradio's last line before it waits for the server to stop.
            if "To create a public link" in line or time.monotonic() > deadline:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200  # serving: SIGTERM now stops a running server
        (work,) = temp.glob("rulstm-web-*")
        request = work / "rulstm-web-request"  # a request's folder with a partial output
        request.mkdir()
        (request / "anticipation.mp4").write_bytes(b"partial")
        server.send_signal(signal.SIGTERM)
        rest, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0
    assert list(temp.glob("rulstm-web-*")) == []
    # Quiet apart from the project's own line (not Gradio's "Keyboard interruption ...").
    lines = rest.strip().splitlines()
    assert len(lines) == 1, rest
    assert lines[0].endswith(": SIGTERM: stopping the server and removing the work folder"), rest
