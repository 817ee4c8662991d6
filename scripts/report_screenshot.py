"""A PNG screenshot of a run report, taken by headless Chromium: what a reader sees without a TensorBoard server.

    python scripts/report_screenshot.py runs/quickstart/version_0 [more runs] --png docs/report.png
    python scripts/report_screenshot.py --report path/to/report --png docs/report.png   # an existing report

Builds the report (``python -m app.cli report``) into ``--output`` (default: a temporary folder) unless ``--report``
names one already written, then opens its ``index.html`` from disk (``file://``: the page needs no server) and saves
the screenshot. Chromium comes from the system (``apt-get install -y chromium`` on Debian/Ubuntu).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    """The first Chromium-like browser on PATH, else exit with how to get one."""
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    sys.exit(
        "report_screenshot: no Chromium on PATH (looked for " + ", ".join(BROWSERS) + "); install one, e.g. "
        "`apt-get install -y chromium`, then run this again"
    )


def build_report(runs: list[str], output: Path) -> Path:
    """The report through the CLI, as a user builds it."""
    result = subprocess.run([sys.executable, "-m", "app.cli", "report", *runs, "-o", str(output)], cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"report_screenshot: building the report failed (exit {result.returncode})")
    return output / "index.html"


def screenshot(browser: str, page: Path, png: Path, width: int = 1280, height: int = 2000) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # containers run as root, where Chromium refuses its sandbox
        "--hide-scrollbars",
        f"--screenshot={png.resolve()}",
        f"--window-size={width},{height}",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not png.is_file():
        sys.exit(f"report_screenshot: {browser} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run folders to report on")
    parser.add_argument("--report", type=Path, help="an existing report folder (holds index.html) instead of RUNs")
    parser.add_argument("--output", type=Path, help="where to build the report (default: a temporary folder)")
    parser.add_argument("--png", type=Path, default=REPO / "docs" / "report.png", help="the screenshot to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.report):
        parser.error("give either RUN folders or --report")
    browser = find_browser()
    with tempfile.TemporaryDirectory() as scratch:
        page = args.report / "index.html" if args.report else build_report(args.runs, args.output or Path(scratch))
        if not page.is_file():
            sys.exit(f"report_screenshot: {page} does not exist; build the report first")
        screenshot(browser, page, args.png, args.width, args.height)
    print(f"screenshot: {args.png}")


if __name__ == "__main__":
    main()
