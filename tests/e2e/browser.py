"""Debian's Chromium driven by Playwright, for the dashboard's end-to-end tests.

Playwright's own browser download needs the internet; the Debian package is used instead
(``make install`` installs it). Chromium's background services are turned off: this
machine's closed network refuses their connections.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import REPO, Cluster

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("KYB_SCREENSHOT_DIR", REPO / "build" / "screenshots"))
"""Where the tests leave their screenshots (the README links copies under docs/)."""
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


def require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (Debian package chromium; set CHROMIUM=...)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        pytest.skip("dashboard browser tests need " + " and ".join(missing))


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright's Browser)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def new_page(b: Any, *, width: int = 1400, height: int = 1000) -> Any:
    ctx = b.new_context(ignore_https_errors=True, viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    return page


def _again_if_network_changed(action: Callable[[], Any]) -> None:
    """Chromium aborts navigations when the host's network interfaces change, and every
    pod the node agent starts or stops adds or removes one: navigate again then (the
    page's own streams reconnect by themselves)."""
    for attempt in range(5):
        try:
            action()
            return
        except Exception as e:
            if "ERR_NETWORK_CHANGED" not in str(e) or attempt == 4:
                raise
            time.sleep(0.3)


def goto(page: Any, url: str) -> None:
    _again_if_network_changed(lambda: page.goto(url))


def reload(page: Any) -> None:
    _again_if_network_changed(page.reload)


def login(page: Any, c: Cluster, token: str | None = None, *, path: str = "") -> None:
    """Open the dashboard, log in with ``token`` (the admin's by default) and wait until
    it shows the cluster."""
    goto(page, f"{c.url}/dashboard/{path}")
    for attempt in range(3):
        # the login form is shown by app.js: a network change while the page loads
        # aborts the script's fetch too, leaving the form hidden: load it again then
        try:
            page.wait_for_selector("#token", state="visible", timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                raise
            reload(page)
    page.fill("#token", c.token if token is None else token)
    page.click("#login")
    if token is None or token == c.token:
        page.wait_for_selector("#conn.live")


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
