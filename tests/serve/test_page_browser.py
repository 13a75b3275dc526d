"""The page at / in a real browser (headless Chromium): start a video, watch it progress and play, cancel another."""

from __future__ import annotations

import shutil

import httpx2 as httpx
import pytest
from served import PROMPT, Served

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (.ci/run installs the distribution's package)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    s = Served(tmp_path_factory.mktemp("page") / "data", key=None).start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        tab = browser.new_page()
        errors = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(s.url + "/")
        yield s, tab, errors
        browser.close()
    s.stop()


def _start(tab, prompt, steps):
    tab.fill("#prompt", prompt)
    tab.fill("#steps", str(steps))
    tab.click("#start")


def test_start_watch_progress_and_play(page):
    s, tab, errors = page
    tab.wait_for_function("document.querySelector('#model').options.length > 0")
    _start(tab, PROMPT, 24)
    card = tab.locator(".job").first
    seen = set()
    for _ in range(400):
        value = card.locator("progress").evaluate("p => p.value")
        seen.add(value)
        if card.locator("video").count():
            break
        tab.wait_for_timeout(25)
    assert len([v for v in seen if 0 < v < 100]) >= 2, seen  # the bar moved through the run
    video = card.locator("video")
    video.wait_for()
    tab.wait_for_function("document.querySelector('.job video').readyState >= 2", timeout=20000)
    t0 = video.evaluate("v => v.currentTime")
    tab.wait_for_timeout(600)
    assert video.evaluate("v => v.currentTime") != t0  # it plays
    assert video.evaluate("v => v.videoWidth") > 0
    with tab.expect_download() as saved:
        card.locator(".dl a").click()
    assert saved.value.suggested_filename.endswith(".mp4")
    assert open(saved.value.path(), "rb").read()[4:8] == b"ftyp"
    assert card.get_attribute("data-status") == "completed" and not errors


def test_cancel_a_job_mid_run(page):
    s, tab, errors = page
    before = tab.locator(".job").count()
    _start(tab, "a blue square moving left on a white background", 400)
    tab.wait_for_function(f"document.querySelectorAll('.job').length > {before}")
    card = tab.locator(".job").first  # the newest card is on top
    job_id = card.get_attribute("data-id")
    tab.wait_for_function("(() => { const p = document.querySelector('.job progress'); return p.value > 0; })()", timeout=30000)
    card.locator(".cancel").click()
    tab.wait_for_function("document.querySelector('.job').dataset.status === 'failed'", timeout=30000)
    record = httpx.get(f"{s.url}/v1/videos/{job_id}").json()
    assert record["status"] == "failed" and record["error"]["code"] == "cancelled" and record["progress"] < 100
    assert "cancelled" in card.locator(".meta").inner_text() and not errors
