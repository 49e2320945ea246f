"""Screenshot of the browser demo (``rulstm-web``) serving a quickstart's trained models, as a
new user sees it after ``make quickstart`` and ``rulstm-web``: ``docs/web.png``.

    make quickstart                     # or: rulstm-quickstart --out quickstart_output
    python scripts/web_screenshot.py --quickstart-dir quickstart_output --out docs/web.png

It serves the folder exactly as ``rulstm-web --quickstart-dir DIR`` does (fusion model, the
quickstart's extraction config and palette, the first validation video offered as a sample),
on a free local port, and drives Debian's headless Chromium through Selenium (``chromium`` and
``chromium-driver``, the browser test's tools): it gives the page the sample clip, presses
*Anticipate* with the page's defaults (1 s ahead, top 5), waits for the result, stops the
result video at ``--seek`` seconds (so its panel shows anticipations and the ground truth, not
the first frame's "observing..."), and saves the page, cropped to its content and reduced to
256 colours (``--colors 0`` keeps full colour). It then prints what the page showed: the
status line and the mean top-1 probability at 1 s over the clip's steps, against a uniform
guess, read from the page's predictions download.

Exit status: 0 saved; 1 the quickstart folder, Chromium or the page failed (one line says why).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from epic_protocol.errors import ArgumentParser, cli_main
from rulstm_apps.web import WebSetupError, prepare, quickstart_serving

WINDOW = (1400, 1700)  # width, height of the browser window, pixels


class Capture(NamedTuple):
    """What the saved page showed."""

    path: Path
    status: str  # the page's status line ("N frames, M anticipation steps, ...")
    steps: int  # lines of the predictions download
    mean_top1: float  # mean over steps of the top-1 probability at the chosen time
    uniform: float  # 1 / number of actions
    seek_s: float  # where the result video was stopped


class ScreenshotError(RuntimeError):
    """The page could not be captured; the message says why."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _chrome(window: tuple[int, int]):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise ScreenshotError(
            "needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        "--force-device-scale-factor=1", f"--window-size={window[0]},{window[1]}",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


# Stop the result video at a time (clamped to its length) and call back once the frame shows.
_SEEK = """
const [seconds, done] = [arguments[0], arguments[arguments.length - 1]];
const video = document.querySelector('#result-video video');
const go = () => {
  video.pause();
  const target = Math.max(0, Math.min(seconds, video.duration - 0.1));
  video.addEventListener('seeked', () => done(video.currentTime), {once: true});
  video.currentTime = target;
};
if (video.readyState >= 1) { go(); } else { video.addEventListener('loadedmetadata', go, {once: true}); video.load(); }
"""


# The bottom of the app's own content, in page pixels (not Gradio's footer below it).
_BOTTOM = """
const ids = ['#downloads', '#weights', '#probabilities', '#status', '#result-video'];
const bottoms = ids.map(id => document.querySelector(id))
  .filter(e => e).map(e => e.getBoundingClientRect().bottom + window.scrollY);
return bottoms.length ? Math.ceil(Math.max(...bottoms)) + 8 : null;
"""


def _finished(status: str) -> str | None:
    """The page's status line once the request is over (a result or a message), else None."""
    done = any(words in status for words in ("anticipation steps", "Cannot process", "went wrong"))
    return status.strip() if done else None


def _predictions(url: str, horizon: float) -> tuple[int, float]:
    """Steps and mean top-1 probability at ``horizon`` of the page's predictions download."""
    with urllib.request.urlopen(url, timeout=60) as response:  # the local app, nothing else
        lines = [json.loads(line) for line in response.read().decode().splitlines() if line]
    best = [
        next(a for a in line["anticipations"] if abs(a["time_s"] - horizon) < 1e-6)["top_k"][0][
            "probability"
        ]
        for line in lines
    ]
    return len(lines), (sum(best) / len(best) if best else 0.0)


def save_page(
    image_path: Path,
    out: Path,
    *,
    colors: int = 256,
    margin: int = 12,
    bottom: int | None = None,
) -> Path:
    """Crop a screenshot to its non-background content above ``bottom`` (pixels; default: all
    of it), plus ``margin`` pixels, and save it reduced to ``colors`` colours (0: full)."""
    from PIL import Image, ImageChops

    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    if bottom is not None and 0 < bottom < image.height:
        image = image.crop((0, 0, image.width, bottom))
    background = Image.new("RGB", image.size, image.getpixel((0, 0)))
    box = ImageChops.difference(image, background).getbbox()
    if box is not None:
        left, top, right, bottom = box
        image = image.crop(
            (
                max(0, left - margin),
                max(0, top - margin),
                min(image.width, right + margin),
                min(image.height, bottom + margin),
            )
        )
    if colors:
        image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    return out


def capture(
    quickstart_dir: Path,
    out: Path,
    *,
    seek_s: float = 20.0,
    timeout_s: float = 900.0,
    window: tuple[int, int] = WINDOW,
    colors: int = 256,
) -> Capture:
    """Serve ``quickstart_dir``, run the page on its sample clip, save the page as ``out``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    serving = quickstart_serving(quickstart_dir)  # FileNotFoundError names what is missing
    if not serving.samples:
        raise ScreenshotError(f"{quickstart_dir} has no validation video to offer as a sample")
    sample = serving.samples[0]
    actions = len(Path(serving.model.actions).read_text().splitlines()) - 1  # less the header
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="rulstm-web-shot-") as scratch:
        prepared = prepare(
            ["--quickstart-dir", str(quickstart_dir), "--port", str(port)],
            work_root=Path(scratch) / "work",
        )
        prepared.app.launch(prevent_thread_lock=True, quiet=True, **prepared.launch_kwargs)
        driver = _chrome(window)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(driver, timeout_s)
            wait.until(lambda d: sample.stem in d.page_source)  # the sample is offered
            upload = wait.until(
                ready.presence_of_element_located((By.CSS_SELECTOR, "#clip input[type=file]"))
            )
            upload.send_keys(str(sample.resolve()))
            wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#clip video")))
            driver.find_element(By.CSS_SELECTOR, "#run").click()
            status = wait.until(lambda d: _finished(d.find_element(By.ID, "status").text))
            if "anticipation steps" not in status:
                raise ScreenshotError(f"the page refused the clip: {status}")
            link = wait.until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#downloads a[href*='predictions']")
            )[0]
            steps, mean_top1 = _predictions(link.get_attribute("href"), 1.0)
            video = wait.until(
                ready.presence_of_element_located((By.CSS_SELECTOR, "#result-video video"))
            )
            wait.until(lambda _: video.get_attribute("src"))
            driver.set_script_timeout(60)
            seeked = float(driver.execute_async_script(_SEEK, seek_s))
            driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
            time.sleep(2.0)  # the charts draw (Vega) and the seeked frame paints
            bottom = driver.execute_script(_BOTTOM)
            raw = Path(scratch) / "page.png"
            if not driver.save_screenshot(str(raw)):
                raise ScreenshotError("Chromium could not save the screenshot")
            save_page(raw, out, colors=colors, bottom=int(bottom) if bottom else None)
        finally:
            driver.quit()
            prepared.app.close()
    return Capture(
        path=out,
        status=status,
        steps=steps,
        mean_top1=mean_top1,
        uniform=1 / max(1, actions),
        seek_s=seeked,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="web_screenshot.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quickstart-dir",
        type=Path,
        default=Path("quickstart_output"),
        help="a finished rulstm-quickstart folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/web.png"), help="PNG (default: %(default)s)"
    )
    parser.add_argument(
        "--seek",
        type=float,
        default=20.0,
        help="stop the result video at this time, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--colors",
        type=int,
        default=256,
        help="colours of the saved PNG, 0 for full colour (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds to wait for each step of the page (default: %(default)s)",
    )
    return parser


@cli_main("web_screenshot.py")
def main(argv: Sequence[str] | None = None) -> int:
    from selenium.common.exceptions import WebDriverException

    args = build_parser().parse_args(argv)
    try:
        shot = capture(
            args.quickstart_dir,
            args.out,
            seek_s=args.seek,
            timeout_s=args.timeout,
            colors=args.colors,
        )
    except (ScreenshotError, FileNotFoundError, WebSetupError) as error:
        print(f"web_screenshot.py: error: {error}", file=sys.stderr)
        return 1
    except WebDriverException as error:  # a timeout or a page without the expected elements
        first = (error.msg or type(error).__name__).strip().splitlines()
        print(
            f"web_screenshot.py: error: the page did not finish: {first[0] if first else error}",
            file=sys.stderr,
        )
        return 1
    print(
        f"saved {shot.path} (result video stopped at {shot.seek_s:.2f} s)\n"
        f"page status: {shot.status}\n"
        f"mean top-1 probability at 1 s over {shot.steps} steps: {shot.mean_top1:.3f} "
        f"(a uniform guess: {shot.uniform:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
