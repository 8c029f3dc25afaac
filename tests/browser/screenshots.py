"""Screenshots of the workbench's main pages, for docs/screenshots (README "Working the queue").

Against a running workbench (``benefits-ledger demo --serve`` prints the URL and logins):

    .venv/bin/python -m tests.browser.screenshots http://127.0.0.1:8000/ sam PASSWORD sue PASSWORD docs/screenshots

The browser tests call ``capture`` too, into their own temporary folder, so this keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1440, "height": 960}


def log_in(page: Any, base: str, login: str, password: str) -> None:
    page.goto(f"{base}login")
    page.fill("#login", login)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/queue")


def capture(page: Any, base: str, out: Path) -> list[Path]:
    """The queue, one discrepancy with its actions, the account it is on, and an entry form."""
    out.mkdir(parents=True, exist_ok=True)
    shots = []

    def shot(name: str, full: bool = False) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=full)
        shots.append(path)

    page.goto(f"{base}queue?sort=amount")
    shot("queue")
    page.locator("table[data-testid=queue] tbody tr a").first.click()
    page.wait_for_selector("[data-testid=actions]")
    shot("discrepancy")
    page.locator("dl.facts dd a").first.click()
    page.wait_for_selector("[data-testid=months]")
    shot("account", full=True)
    page.goto(f"{base}entries/payment")
    shot("direct-payment")
    return shots


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    base, login, password, supervisor, supervisor_password, folder = argv
    base = base if base.endswith("/") else base + "/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        log_in(page, base, login, password)
        paths = capture(page, base, Path(folder))
        page.context.clear_cookies()
        log_in(page, base, supervisor, supervisor_password)
        page.goto(f"{base}queue?state=pending")
        if page.locator("table[data-testid=queue] tbody tr a").count():
            page.locator("table[data-testid=queue] tbody tr a").first.click()
            page.wait_for_selector("[data-testid=actions]")
            page.screenshot(path=str(Path(folder) / "approval.png"))
            paths.append(Path(folder) / "approval.png")
        browser.close()
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
