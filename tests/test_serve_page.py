"""The try-it page at `/`, driven in headless Chromium with Playwright.

Needs `/usr/bin/chromium` (see `tests/support/browser.py`).
"""

import shutil

import httpx
import pytest

from kerasbert.serving.app import create_app
from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.model_manager import ModelManager
from tests.support.browser import browser, needs_chromium, open_page  # noqa: F401  (a fixture)
from tests.support.servers import background_server


@pytest.fixture(scope="module")
def url(exported_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("page")
    shutil.copytree(exported_model, base / "tiny" / "1")
    # "empty" has no versions: the page must say so.
    configs = [ServedModelConfig("tiny", base / "tiny"), ServedModelConfig("empty", base / "empty")]
    manager = ModelManager(configs, poll_wait_seconds=0)
    manager.poll()
    with background_server(create_app(manager)) as server_url:
        yield server_url


def test_page_is_self_contained_and_lists_the_models(url):
    response = httpx.get(f"{url}/", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<script id="models" type="application/json">["tiny", "empty"]</script>' in html
    # Nothing is fetched from elsewhere: no external scripts, styles or fonts.
    assert "http://" not in html and "https://" not in html and " src=" not in html


@needs_chromium
def test_page_classifies_texts_and_draws_probability_bars(url, browser, tmp_path):
    texts = [
        "the film was great and lovely",
        "the film was dull and boring",
        "the film was tickets and runtime",
    ]
    errors = []
    page = open_page(browser, url, errors)
    assert page.locator("#model option").all_inner_texts() == ["tiny", "empty"]
    page.fill("#texts", "\n".join(texts) + "\n\n")
    page.click("#run")
    page.wait_for_selector("#results .result:nth-child(3)", timeout=60_000)
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    expected = httpx.post(
        f"{url}/v1/models/tiny:classify",
        json={"signature_name": "classify", "examples": [{"text": t} for t in texts]},
        timeout=30,
    ).json()["results"]
    results = page.locator("#results .result")
    assert results.count() == 3
    for index, (text, classes) in enumerate(zip(texts, expected)):
        result = results.nth(index)
        assert result.locator(".text").inner_text().startswith(text)
        assert result.locator(".label").all_inner_texts() == ["negative", "neutral", "positive"]
        widths = result.locator(".bar").evaluate_all(
            "bars => bars.map(b => parseFloat(b.style.width))"
        )
        assert widths == pytest.approx([100 * score for _, score in classes], abs=0.06)
        best = max(classes, key=lambda c: c[1])[0]
        assert result.locator(".prediction").inner_text() == f"→ {best}"
        assert result.locator(".row.top .label").inner_text() == best
    assert page.locator("#message").inner_text().startswith("3 texts in")
    assert errors == []
    assert (tmp_path / "page.png").stat().st_size > 10_000


@needs_chromium
def test_page_shows_the_servers_errors(url, browser):
    page = browser.new_page()
    page.goto(f"{url}/", timeout=60_000)
    page.wait_for_function("document.getElementById('version').textContent !== ''", timeout=60_000)
    page.select_option("#model", "empty")
    page.wait_for_selector("#message.error", timeout=60_000)
    assert (
        page.locator("#message").inner_text()
        == "empty: Servable not found for request: Latest(empty)"
    )
    page.click("#run")
    assert page.locator("#message.error").inner_text() == "Pick a model that loads first."
    assert page.locator("#results .result").count() == 0
