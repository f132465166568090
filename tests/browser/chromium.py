"""Debian's chromium driven by Playwright, and what a test watches a page for.

No browser is ever downloaded: Playwright launches ``/usr/bin/chromium``. Where it is missing
the browser tests skip, except under ``CI=true``, where they fail (``.ci/run`` installs it).
The flags keep Chromium from reaching for any network of its own (updates, sync, field trials),
which a closed network would refuse and log as errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 15_000
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

#: Collects every CSP violation the page reports, before any of its own script runs.
WATCH_CSP = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


def chromium_path() -> str:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (Debian package 'chromium')")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return str(CHROMIUM)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=list(ARGS))
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """A page and everything it complained about: console errors, uncaught exceptions and
    dialogs (an ``alert`` from an injected handler would be one)."""

    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def violations(self) -> list[str]:
        found = await self.page.evaluate("window.__violations || []")
        return [str(item) for item in found]


async def open_page(
    browser: Browser, *, width: int = 1280, height: int = 900, scheme: str = "light"
) -> Watched:
    context = await browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme="dark" if scheme == "dark" else "light",
    )
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            watched.errors.append(f"console {message.type}: {message.text}")

    def on_error(error: Exception) -> None:
        watched.errors.append(f"page error: {error}")

    async def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.on("dialog", on_dialog)
    await page.add_init_script(WATCH_CSP)
    return watched
