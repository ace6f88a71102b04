"""The HTML explorer at scale: python benchmarks/explorer.py [--sizes 1000,10000] [--json FILE]

For each size, a synthetic run of that many generated problems (with embeddings and round evidence as a real run
writes them) is turned into explorer.html; prints the build time, the file size and the page's load time in a
headless Debian Chromium (navigation to the explorer being ready: data parsed, map and table drawn).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import synthetic_run

from opensir_lite.exploration import write_explorer_html


def load_seconds(page: Path) -> float:
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-unsafe-swiftshader", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        start = time.perf_counter()
        browser.get(page.as_uri())
        WebDriverWait(browser, 300).until(
            lambda b: b.execute_script("return !!(window.explorer && window.explorer.shown.length)")
        )
        return time.perf_counter() - start
    finally:
        browser.quit()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of generated problems")
    p.add_argument("--json", default=None, help="write the table here as JSON")
    args = p.parse_args()
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("error: needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
            run = synthetic_run(Path(tmp) / f"run{n}", n)
            start = time.perf_counter()
            page = write_explorer_html(run)
            build = time.perf_counter() - start
            rows.append({"problems": n, "build_seconds": build, "megabytes": page.stat().st_size / 1e6,
                         "load_seconds": load_seconds(page)})  # fmt: skip
            print(rows[-1], flush=True)
    print(f"{'problems':>9}{'build s':>9}{'MB':>7}{'load s':>8}")
    for r in rows:
        print(f"{r['problems']:>9}{r['build_seconds']:>9.1f}{r['megabytes']:>7.1f}{r['load_seconds']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
