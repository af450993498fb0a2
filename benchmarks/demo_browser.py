"""The demo in a real browser: its start-up time, the time from a stroke to the answer, and what it loads.

Starts `python demo.py` as a user would and times it until it prints its address, opens the page in headless
Chromium (Debian's package, driven by Playwright), draws a 7 stroke by stroke with the mouse and times each
stroke until the answer is on the page, then asks "Why not 1" and saves a screenshot. A request for any
address other than the demo's is refused and listed. Then times the same answer without the browser, called
through Gradio's client, and stops the demo as Ctrl+C does. Prints one JSON line.

    apt-get install -y chromium && pip install playwright
    python benchmarks/demo_browser.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt --screenshot demo.png
    # with no network at all (as root): only the loopback interface exists in the new namespace
    unshare -n sh -c 'ip link set lo up && python benchmarks/demo_browser.py ...'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image, ImageDraw
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
# A 7 with a bar across, as fractions of the drawing area: (x, y) points, one list per stroke.
SEVEN = [
    [(0.30, 0.25), (0.50, 0.24), (0.70, 0.25)],
    [(0.70, 0.25), (0.58, 0.50), (0.47, 0.78)],
    [(0.46, 0.50), (0.66, 0.50)],
]


def start_demo(overrides: list[str]) -> tuple[subprocess.Popen, str, float]:
    """`python demo.py`, the address it prints, and the seconds until it printed it."""
    started = time.perf_counter()
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "demo.py"), *overrides],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in demo.stdout:
        found = re.search(r"Open (\S+) in a browser", line)
        if found:
            return demo, found.group(1), time.perf_counter() - started
    raise SystemExit(f"demo.py ended without serving (exit status {demo.wait()})")


def answer_shown(page: Page, previous: str | None) -> str:
    """Wait until the page shows a new 28x28 image (the answer's first output); its address."""
    handle = page.wait_for_function(
        """previous => {
            const img = document.querySelector('#seen img');
            return img && img.complete && img.src !== previous && img.src;
        }""",
        arg=previous,
        timeout=30_000,
    )
    return handle.json_value()


def draw(page: Page) -> list[float]:
    """Draw SEVEN with the mouse; the seconds from each stroke's release to its answer on the page."""
    box = page.locator("#canvas canvas").first.bounding_box()
    side = min(box["width"], box["height"]) * 0.8  # the white page sits in the middle of the canvas
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    seen, times = None, []
    for stroke in SEVEN:
        points = [(left + x * side, top + y * side) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)
        released = time.perf_counter()
        page.mouse.up()
        seen = answer_shown(page, seen)
        times.append(round(time.perf_counter() - released, 3))
    return times


def api_seconds(url: str, calls: int) -> list[float]:
    """The answer to a drawn 7 through Gradio's client: what a stroke costs without the page's canvas work."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Image.new("RGB", (400, 400), "white")
        for stroke in SEVEN:
            ImageDraw.Draw(page).line([(400 * x, 400 * y) for x, y in stroke], fill="black", width=28)
        page.save(Path(tmp) / "seven.png")
        drawn = handle_file(Path(tmp) / "seven.png")
        client = Client(url, verbose=False, analytics_enabled=False, download_files=tmp)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            client.predict(
                {"background": drawn, "layers": [], "composite": drawn}, "runner-up", api_name="/answer"
            )
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="demo.py overrides, such as ckpt_path=...")
    parser.add_argument("--screenshot", type=Path, help="where to save the page, as PNG")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the client reads only the variable
    args = parser.parse_args()

    demo, url, startup = start_demo(args.overrides)
    refused: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 1040})

            def only_the_demo(route) -> None:
                if route.request.url.startswith(url):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_demo)
            loaded = time.perf_counter()
            page.goto(url)
            page.locator("#canvas canvas").first.wait_for()
            page_load = time.perf_counter() - loaded
            strokes = draw(page)
            top = page.locator("#probabilities [data-testid=label-output-value]").inner_text()
            before = page.locator("#why-not img").get_attribute("src")
            page.locator("#other").get_by_text("1", exact=True).click()
            page.wait_for_function(
                "b => document.querySelector('#why-not img').src !== b", arg=before, timeout=30_000
            )
            page.wait_for_timeout(300)  # let the image paint
            if args.screenshot:
                page.screenshot(path=args.screenshot, full_page=True)
            browser.close()
        api = api_seconds(url, calls=20)
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl+C: the demo closes its server and removes its empty run dir
        demo.wait()
    print(
        json.dumps(
            {
                "startup_s": round(startup, 2),
                "page_load_s": round(page_load, 2),
                "stroke_to_answer_s": strokes,
                "top_class": top,
                "api_answer_s": {"median": round(statistics.median(api), 3), "min": round(min(api), 3)},
                "refused_requests": refused,
            }
        )
    )


if __name__ == "__main__":
    main()
