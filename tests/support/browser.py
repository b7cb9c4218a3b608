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


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for a test module; import it into the module that uses it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright, timeout=60_000)
        yield browser
        browser.close()


def open_page(browser, url, errors):
    """The server's page at `url`, once its first model has loaded; page errors go to `errors`."""
    page = browser.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/", timeout=60_000)
    wait_for_model(page)
    return page


def wait_for_model(page):
    """Waits until the page's picked model has loaded (its version is shown)."""
    page.wait_for_function(
        "document.getElementById('version').textContent.startsWith('version')", timeout=60_000
    )
