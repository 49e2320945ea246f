"""rulstm-web's command line and server: the quickstart mode, the launch options, the
extraction options passed through, no Gradio in the core packages, and one end-to-end check of
the page in headless Chromium. The request handler's tests are in test_web_request.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rulstm_apps.web import main, prepare, quickstart_serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


PALETTE = """\
- id: 0
  name: tomato
  rgb: [220, 40, 40]
- id: 1
  name: basil
  rgb: [40, 180, 60]
- id: 2
  name: plate
  rgb: [40, 60, 220]
"""


@pytest.fixture
def quickstart_folder(tmp_path, make_checkpoint, tiny_video, actions_csv) -> Path:
    """A quickstart output folder as rulstm-web reads it: a fusion checkpoint that fits
    configs/extract/quickstart.yaml (ResNet-18 rgb/flow, a 3-colour palette), the vocabulary,
    and one validation video (the tiny clip)."""
    folder = tmp_path / "quickstart_output"
    data = folder / "data"
    (data / "videos").mkdir(parents=True)
    checkpoints = folder / "runs" / "fusion" / "checkpoints"
    checkpoints.mkdir(parents=True)
    fusion = make_checkpoint("fusion", dims={"rgb": 512, "flow": 512, "obj": 3})
    fusion.rename(checkpoints / "best.ckpt")
    (data / "objects.yaml").write_text(PALETTE)
    shutil.copy(actions_csv, data / "actions.csv")
    (data / "validation_videos.csv").write_text("P02_01\n")
    (data / "validation.csv").write_text("00000, P02_01, 0000000020, 0000000040, 001, 004, 0004\n")
    shutil.copy(tiny_video, data / "videos" / "P02_01.mp4")
    return folder


def test_quickstart_mode_names_what_is_missing_and_finds_the_models(
    tmp_path, quickstart_folder, capsys
):
    missing = tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match="best.ckpt not found .*make quickstart"):
        quickstart_serving(missing)
    assert main(["--quickstart-dir", str(missing)]) == 1
    assert "make quickstart" in capsys.readouterr().err
    data = quickstart_folder / "data"
    serving = quickstart_serving(quickstart_folder)
    assert serving.samples == (data / "videos" / "P02_01.mp4",)
    assert serving.model.extract_config.name == "quickstart.yaml"
    assert serving.model.extract_overrides == ("--obj.palette", str(data / "objects.yaml"))
    assert serving.model.verb_classes is None  # no EPIC class files: names from actions.csv
    prepared = prepare(["--quickstart-dir", str(quickstart_folder), "--port", "7999"],
                       work_root=tmp_path / "work")  # fmt: skip
    assert prepared.launch_kwargs["server_name"] == "127.0.0.1"  # local only by default
    assert prepared.launch_kwargs["server_port"] == 7999
    assert prepared.launch_kwargs["allowed_paths"] == [str((data / "videos").resolve())]
    assert prepared.launch_kwargs["max_file_size"] == 100 * 2**20  # bytes


def test_the_core_packages_do_not_import_gradio():
    code = (
        "import sys, rulstm, rulstm.online, feature_extraction, epic_protocol, "
        "rulstm_apps.demo, rulstm_apps.web, rulstm_apps.web_page, rulstm_apps.web_request; "
        "assert 'gradio' not in sys.modules, 'gradio imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver); .ci/run installs them",
)
def test_the_page_in_headless_chromium(quickstart_folder, tiny_video, tmp_path):
    """rulstm-web in quickstart mode (no model arguments) on a free local port: the sample is
    offered; upload the tiny clip, wait for the result: the video element has a source and the
    predictions file downloads; screenshot in tmp_path."""
    pytest.importorskip("gradio", reason="the [web] extra is not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    work_root = tmp_path / "work"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    port = _free_port()
    prepared = prepare(
        ["--quickstart-dir", str(quickstart_folder), "--port", str(port)], work_root=work_root
    )
    app = prepared.app
    app.launch(prevent_thread_lock=True, **prepared.launch_kwargs)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--window-size=1400,1600",
    ):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: "P02_01" in d.page_source)  # the quickstart's sample is offered
        upload = wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "#clip input[type=file]"))
        )
        upload.send_keys(str(tiny_video))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#clip video")))
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        video = wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "#result-video video"))
        )
        wait.until(lambda _: video.get_attribute("src"))
        assert video.get_attribute("src").startswith(f"http://127.0.0.1:{port}/")
        links = wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads a[href*='predictions']")
        )
        links[0].click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(downloads.glob("predictions*.jsonl")):
            time.sleep(0.2)
        (downloaded,) = downloads.glob("predictions*.jsonl")
        lines = [json.loads(line) for line in downloaded.read_text().splitlines()]
        assert len(lines) == 8 and lines[0]["frame"] == 7
        assert "8 anticipation steps" in driver.find_element(By.CSS_SELECTOR, "#status").text
        time.sleep(1.0)  # let the charts draw before the screenshot
        assert driver.save_screenshot(str(tmp_path / "web.png"))
        # The request's folder is removed once Gradio has its copies.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(work_root.iterdir()):
            time.sleep(0.2)
        assert list(work_root.iterdir()) == []
    finally:
        driver.quit()
        app.close()


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver); .ci/run installs them",
)
def test_the_screenshot_script_saves_the_page_on_the_quickstart_sample(
    quickstart_folder, tmp_path, load_script, capsys
):
    """scripts/web_screenshot.py (how docs/web.png is made) on a quickstart folder: the sample
    clip runs through the page, the result video is stopped where asked (clamped to the 2 s
    clip), the PNG is the page cropped to its content in 256 colours, and the script reports
    what the page showed, read from its predictions download."""
    pytest.importorskip("gradio", reason="the [web] extra is not installed")
    from PIL import Image

    script = load_script("web_screenshot")
    out = tmp_path / "docs" / "web.png"
    args = ["--quickstart-dir", str(quickstart_folder), "--out", str(out), "--seek", "1.5"]
    assert script.main([*args, "--timeout", "300"]) == 0
    printed = capsys.readouterr().out
    assert f"saved {out} (result video stopped at 1.50 s)" in printed
    assert "page status: 60 frames, 8 anticipation steps" in printed
    assert "over 8 steps" in printed and "(a uniform guess: 0.083)" in printed  # 12 actions
    with Image.open(out) as image:
        assert image.mode == "P"  # 256 colours
        width, height = image.size
        assert 600 < width < script.WINDOW[0] and 600 < height <= script.WINDOW[1]
    missing = tmp_path / "elsewhere"
    assert script.main(["--quickstart-dir", str(missing), "--out", str(out)]) == 1
    assert "make quickstart" in capsys.readouterr().err


def test_options_that_are_not_the_apps_are_extraction_options():
    from rulstm_apps.web import parse

    namespace, overrides = parse(
        ["--checkpoint", "rgb.ckpt", "--rgb.weights", "TSN-rgb.pth.tar", "--checkpoint",
         "flow.ckpt", "--modalities", "rgb", "flow", "--port", "7000", "--", "--threads", "1"]
    )  # fmt: skip
    assert namespace.checkpoint == [Path("rgb.ckpt"), Path("flow.ckpt")] and namespace.port == 7000
    assert namespace.host == "127.0.0.1"
    assert overrides == [
        "--rgb.weights", "TSN-rgb.pth.tar", "--modalities", "rgb", "flow", "--threads", "1"
    ]  # fmt: skip
