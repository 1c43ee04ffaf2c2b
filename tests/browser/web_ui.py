"""Drives the Temporal Web UI (v2.54, served by `temporal server start-dev`) the way a person does:
headless Chromium from Debian's `chromium` package, steered by Playwright with the system browser.

Nothing here downloads a browser (`playwright install` is never run): Chromium is found at
$QLOOP_CHROMIUM or /usr/bin/chromium, and `make browser` installs it when it is missing.
Selectors are roles, labels and visible text, so they describe what a person sees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Locator, Page, Playwright, expect

CHROMIUM_ENV = "QLOOP_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Chromium runs as root on CI machines without a GPU; every flag keeps it from reaching out to
# Google's services, which are unreachable here and would only slow start-up.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The UI fetches through the dev server, and a 2-core machine also runs the worker and the server.
UI_TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """The system Chromium; fails (never skips) with the way to install it."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {path} (from ${CHROMIUM_ENV} or the default "
            f"{DEFAULT_CHROMIUM}). Run `make browser` (installs Debian's `chromium` package), "
            f"or set {CHROMIUM_ENV} to a Chromium binary. Playwright's own browser downloads are "
            "not used.",
            pytrace=False,
        )
    return path


async def launch_chromium(playwright: Playwright, profile_dir: Path) -> BrowserContext:
    """Headless Chromium with a fresh profile; chromium_sandbox=False because CI runs as root."""
    context = await playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=chromium_path(),
        headless=True,
        chromium_sandbox=False,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900},
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    return context


class Screenshots:
    """One numbered screenshot per step, so a failure shows how far the UI got."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.taken = 0
        folder.mkdir(parents=True, exist_ok=True)

    async def take(self, step: str) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{step}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


class TemporalWebUI:
    """The pages and dialogs of the Web UI an approver goes through."""

    def __init__(self, page: Page, base_url: str, namespace: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace

    async def open_workflow_list(self) -> None:
        await self.page.goto(f"{self.base_url}/namespaces/{self.namespace}/workflows")
        await expect(self.page.get_by_role("button", name="Add Filter")).to_be_visible()

    async def search(self, visibility_query: str) -> None:
        """Types a visibility query into the raw query box (the `</>` toggle) and runs it."""
        await self.page.get_by_test_id("toggle-manual-query").click()
        box = self.page.get_by_placeholder("Enter a query")
        await box.fill(visibility_query)
        await self.page.get_by_role("button", name="Search", exact=True).click()
        # The UI applies a search by putting it in the address; the rows follow.
        await self.page.wait_for_url("**/workflows?query=*")

    def workflow_link(self, workflow_id: str) -> Locator:
        return self.page.get_by_role("link", name=workflow_id, exact=True)

    async def open_workflow(self, workflow_id: str) -> None:
        await self.workflow_link(workflow_id).click()
        await expect(self.page.get_by_role("heading", level=1, name=workflow_id)).to_be_visible()

    def status(self, label: str) -> Locator:
        """The workflow page's status badge: Running, Completed, Failed..."""
        return self.page.get_by_role("status").filter(has_text=label)

    async def send_signal(self, name: str, payload: dict[str, Any]) -> None:
        """More Actions → Send a Signal; the signal is picked from the names the workflow
        declares (the UI asks the worker for them) and the payload typed as JSON."""
        await self.page.get_by_role("button", name="More Actions").click()
        await self.page.get_by_role("menuitem", name="Send a Signal").click()
        dialog = self.page.get_by_role("dialog", name="Send a Signal")
        await expect(dialog).to_be_visible()
        await dialog.get_by_role("button", name="Select a signal").click()
        await dialog.get_by_role("option", name=name, exact=True).click()
        await dialog.get_by_role("textbox", name="Data").click()
        # insert_text, not typing: the JSON editor closes brackets and quotes on key presses.
        await self.page.keyboard.insert_text(json.dumps(payload))
        await dialog.get_by_role("button", name="Submit").click()
        await expect(self.page.get_by_text("Workflow signaled.").first).to_be_visible()
