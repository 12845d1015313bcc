"""Screenshot of a generated site, as committed in docs/leaderboard.png.

  python -m benchmark site --runs results/offline/runs --out build/site
  python scripts/site_screenshot.py build/site/index.html docs/leaderboard.png

Uses playwright with Debian's chromium (the `browser` extra; scripts/install.sh installs
chromium), no network.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", help="the site's index.html")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(Path(args.index).resolve().as_uri())
        page.screenshot(path=args.out)
        browser.close()
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
