"""Regenerate the dashboard's screenshots in docs/screenshots/ from the demo fleet.

    python -m tests.browser.screenshots [--out docs/screenshots]

Starts the real service on a temporary SQLite file, seeds ``demo_data`` for tenant ``acme``,
signs in with an admin key and saves the overview, the session list and a session page, as
Debian's chromium renders them (1360 px wide, full page).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser import demo_data
from tests.browser.harness import CHROMIUM_ARGS, live_server

TENANT = "acme"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, live_server(Path(folder)) as server:
        ids = server.call(TENANT, demo_data.seed)
        key, _ = server.create_key(TENANT, "admin")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(server.url + "/signin")
            page.fill("#key", key)
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/")
            shots = {
                "overview.png": "/",
                "sessions.png": "/sessions",
                "session.png": f"/sessions/{ids[0]}",
            }
            for name, path in shots.items():
                page.goto(server.url + path)
                page.wait_for_selector('[data-live-status][data-state="on"]')
                page.screenshot(path=str(args.out / name), full_page=True)
                print(args.out / name)
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
