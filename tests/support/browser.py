"""Headless Chromium against an app served over real HTTP: what it rendered and what it shows.

`dump_dom` gives the DOM Chromium rendered; `screenshot` saves a PNG of the window, after
checking it is a real picture and not a blank page. The README's pictures in docs/ are taken
again only when asked (`make screenshots`): a test run leaves the checkout as it found it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from flask import Flask

from harness.wsgi import serving
from tests.conftest import IN_CI

DOCS = Path(__file__).resolve().parents[2] / "docs"
WINDOW = (1280, 1400)
#: Generous: Chromium starts in about a second here, far slower on a loaded machine.
CHROMIUM_TIMEOUT_SECONDS = 120
#: A screenshot of a real page is tens of kilobytes; a blank one is a few.
MIN_SCREENSHOT_BYTES = 20_000


def chromium_binary() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found is None:
        message = "chromium is not installed (make browser)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def served(app: Flask) -> AbstractContextManager[str]:
    """`app` in a threaded HTTP server on a free port; yields its base URL."""
    return serving(app, name="browser-app")


def chromium(tmp_path: Path, *args: str, window: tuple[int, int] = WINDOW) -> str:
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    command = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}", *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(tmp_path: Path, url: str) -> str:
    dom = chromium(tmp_path, "--dump-dom", url)
    assert "<html" in dom, dom[:500]
    return dom


def screenshot(tmp_path: Path, url: str, name: str, window: tuple[int, int] = WINDOW) -> Path:
    shot = tmp_path / name
    chromium(tmp_path, f"--screenshot={shot}", url, window=window)
    assert_png(shot, window)
    keep_for_docs(shot)
    return shot


def keep_for_docs(shot: Path) -> None:
    """Copy a screenshot into docs/ for the README, under its own name, when DOCS_SCREENSHOTS=1."""
    if os.environ.get("DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / shot.name)


def assert_png(path: Path, window: tuple[int, int] = WINDOW) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == window
    assert len(data) > MIN_SCREENSHOT_BYTES, f"{path} is only {len(data)} bytes: a blank page?"
