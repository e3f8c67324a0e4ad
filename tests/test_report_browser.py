"""The report page in a real browser: headless Chromium (Debian's package), driven by Playwright.

Every chart must have drawn marks, no request may leave the page, no console
message may be an error, and the page must read the same with JavaScript off.
A screenshot is kept in test-artifacts/ (ignored by git) for a person to look at.

Without a chromium on PATH the test is skipped, unless BACKFILL_REQUIRE_BROWSER
is set (as .ci/run sets it), where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import REPO, WriteFile, invoke
from report_history import build_history

ARTIFACTS = REPO / "test-artifacts"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("BACKFILL_REQUIRE_BROWSER"):
        pytest.fail("no chromium on PATH; install it (apt-get install -y chromium), as .ci/run does")
    pytest.skip("no chromium on PATH (apt-get install -y chromium)")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("javascript", [True, False])
def test_every_chart_draws_offline_without_errors(tmp_path: Path, write: WriteFile, javascript: bool) -> None:
    browser_path = _chromium()
    from playwright.sync_api import sync_playwright

    build_history(tmp_path, write)
    page_path = tmp_path / "report.html"
    result = invoke("report", "-c", str(tmp_path / "report.toml"), "--out", str(page_path))
    assert result.exit_code == 0, result.output
    url = page_path.as_uri()
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            context = browser.new_context(java_script_enabled=javascript, viewport={"width": 1100, "height": 900})
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(url, wait_until="load")
            charts = page.eval_on_selector_all(
                "figure.chart",
                """figures => figures.map(f => ({
                    name: f.dataset.chart,
                    marks: f.querySelectorAll('svg .mark-rect path, svg .mark-rect rect').length,
                    width: f.querySelector('svg') ? f.querySelector('svg').getBoundingClientRect().width : 0,
                    table: Boolean(f.nextElementSibling && (f.nextElementSibling.matches('table')
                        || f.nextElementSibling.querySelector('table'))),
                }))""",
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"report-js-{'on' if javascript else 'off'}.png"), full_page=True)
        finally:
            browser.close()
    assert [chart["name"] for chart in charts] == ["weekly-app", "lead-app"]
    for chart in charts:
        assert chart["marks"] > 0, chart
        assert chart["width"] > 100, chart
        assert chart["table"], chart  # the same numbers, readable without the chart
    # A bar per kind and week with any (7 over 4 weeks; the empty week draws none), six lead time buckets.
    assert charts[0]["marks"] == 7
    assert charts[1]["marks"] == 6
    assert requests == [url]
    assert problems == []
