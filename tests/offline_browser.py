"""Headless Chromium with the network off: what a report page renders offline, and what it loads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from genretag.data.web_assets import external_resources

OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]


def _browser() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (Debian package `chromium`; .ci/run installs it)")
    return browser


def offline_dom(page: Path) -> str:
    """The DOM of ``page`` after its scripts ran (5 s of virtual time) with every address unreachable."""
    done = subprocess.run([_browser(), *OFFLINE, "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def offline_screenshot(page: Path, png: Path, *, size: str = "1280,1600") -> Path:
    """A screenshot of ``page`` rendered offline, written to ``png``."""
    subprocess.run([_browser(), *OFFLINE, f"--window-size={size}", f"--screenshot={png}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return png


def assert_loads_nothing_external(folder: Path) -> None:
    """No HTML or CSS under ``folder`` loads an http(s) address (scripts, styles, images, fonts)."""
    loaded = {str(p.relative_to(folder)): external_resources(p.read_text(encoding="utf-8", errors="replace"))
              for p in [*folder.rglob("*.html"), *folder.rglob("*.css")]}
    assert {name: urls for name, urls in loaded.items() if urls} == {}
