"""Headless Chromium for the tests that look at a page as a person would.

They need Debian's `chromium` package, which pip can't install. Without it
they are skipped, with the reason, so the README's test command needs only
Python and PyPI; in CI (`CI` set, as `.ci/run` runs) they never skip: a
missing browser fails them there, and `.ci/run` installs it first.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does, and runs these)",
)


def launch(playwright, **options):
    """Chromium under Playwright, headless; fails in one line when it is missing."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, **options)
