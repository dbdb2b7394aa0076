"""Browser fixtures for the web console: Debian's Chromium (installed by `make test`, see
scripts/ensure_chromium.sh) driven by Playwright through `executable_path` — no browser download.

One browser per module; each test gets a fresh page whose console errors fail the test.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
# as root Chromium needs --no-sandbox; without the background-networking flags it keeps trying to reach
# Google's hosts, which this machine's closed network refuses
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def playwright() -> Generator[Playwright, None, None]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package 'chromium' "
                    "(make test does so as root) or set CHROMIUM_BIN")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Generator[Browser, None, None]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Generator[Page, None, None]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        yield opened
        assert errors == [], f"errors in the page: {errors}"
    finally:
        context.close()


# --- no secret material anywhere ------------------------------------------------------------------------

_BASE64 = re.compile(r"^[A-Za-z0-9+/]{40,}={0,2}$")


def secret_material(body: str) -> list[str]:
    """Places in a response that hold a private key: the PEM text itself, or base64 of it (how protobuf
    JSON writes `inline_bytes`)."""
    found = [f"offset {m.start()}" for m in re.finditer("PRIVATE KEY", body)]
    try:
        data: Any = json.loads(body)
    except ValueError:
        return found

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, str) and _BASE64.match(value):
            try:
                decoded = base64.b64decode(value)
            except (binascii.Error, ValueError):
                return
            if b"PRIVATE KEY" in decoded:
                found.append(path)

    walk(data, "$")
    return found
