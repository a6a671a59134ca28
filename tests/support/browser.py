"""The console's tests in a browser: Debian's headless Chromium driven by Selenium (:func:`make_driver`;
:func:`need_browser` fails, saying how to install it, when it is missing), small synchronous helpers to run on
a thread while the test's event loop serves the fakes, and the scripts the tests run in the page."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.process import ROOT

T = TypeVar("T")

INSTALL = "apt-get install -y chromium chromium-driver (and pip install -e '.[test]' for selenium)"


def need_browser() -> None:
    """Fail, saying how to install them, when the browser, its driver or Selenium is missing (issue 32:
    these tests never skip, in CI or not)."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        pytest.fail(f"the console's browser tests need {', '.join(missing)}: {INSTALL}", pytrace=False)


def make_driver(downloads: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(arg)
    options.add_argument("--lang=en-GB")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # The driver given by path: Selenium Manager (which would look for one online) is never run.
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


def until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` (on the browser's thread) every 50 ms until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def ids(driver: Any, list_id: str) -> list[str]:
    return list(js(driver, f"return [...document.querySelectorAll('#{list_id} > li')].map(li => li.dataset.callId)"))


def lines(driver: Any) -> list[dict[str, Any]]:
    """The open call's utterances as shown: speaker, start, text."""
    return list(
        js(
            driver,
            """return [...document.querySelectorAll('#conversation li.utt:not(.partial)')].map(li => ({
                 speaker: li.querySelector('.speaker').textContent, start: Number(li.dataset.start),
                 text: li.querySelector('.text').textContent.trim(), playing: li.classList.contains('playing')}))""",
        )
    )


def error_text(driver: Any) -> str:
    return str(js(driver, "return document.getElementById('error').textContent")) if shown(driver, "error") else ""


def at_paint(timings: dict[str, float]) -> dict[str, float]:
    return timings if "first-contentful-paint" in timings else {}


def at_least(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return items if len(items) >= n else []


def log_in(driver: Any, token: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def type_into(driver: Any, element_id: str, text: str) -> None:
    """The field emptied, then ``text`` typed into it key by key (an ``input`` event each)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.ID, element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    if text:
        field.send_keys(text)


def click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


def keyboard_seek(driver: Any, k: int) -> None:
    """Utterance ``k`` reached with the keyboard: focused, then Enter (a button: no mouse needed)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.CSS_SELECTOR, f"#conversation li.utt:nth-child({k + 1}) button").send_keys(Keys.ENTER)


def shown(driver: Any, element_id: str) -> bool:
    return bool(js(driver, f"const e = document.getElementById('{element_id}'); return !!e && !e.hidden"))


def screenshot(driver: Any, name: str, must_show: list[str]) -> None:
    """The page's key elements are there (by DOM) before the picture is taken; it replaces the README's copy in
    docs/ only with ``BRIDGE_UPDATE_SCREENSHOTS=1`` (else a temporary file: a test run leaves the tree clean)."""
    for css in must_show:
        assert js(driver, "return !!document.querySelector(arguments[0])", css), css
    if os.environ.get("BRIDGE_UPDATE_SCREENSHOTS") == "1":
        path = ROOT / "docs" / name
    else:
        path = Path(tempfile.gettempdir()) / f"bridge-{os.getpid()}-{name}"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 10_000


def first_paint(driver: Any) -> dict[str, float]:
    """The page's navigation and paint timings, in ms from the navigation's start."""
    timings = js(
        driver,
        """const nav = performance.getEntriesByType('navigation')[0];
           const out = {response_end: nav.responseEnd, dom_content_loaded: nav.domContentLoadedEventEnd,
                        load: nav.loadEventEnd};
           for (const p of performance.getEntriesByType('paint')) out[p.name] = p.startTime;
           return out;""",
    )
    return {k: round(float(v), 1) for k, v in timings.items()}


# -- scripts run in the page ----------------------------------------------------------------------

SSE_CHECK = """const done = arguments[arguments.length - 1];
import('/console/api.js').then(({sseParser}) => {
  const out = [];
  const feed = sseParser((event) => out.push(event));
  for (const piece of ['id: 1\\r', '\\nevent: a\\ndata: {"x"', ':1}\\n\\n: keepalive\\n\\nid: 2\\revent: b\\r',
                       'data: l1\\ndata:l2\\r\\n\\r\\n']) feed(piece);
  done(out);
}, (error) => done(String(error)));"""


# The page's follow() of a call's events, its first stream cut after 3000 bytes (mid-event, as a dropped
# connection): it resumes with Last-Event-ID and gets every event once, in order, then 204 ends it.
RESUME_CHECK = """const [callId, done] = arguments;
const real = window.fetch;
const asked = [];
let cut = true;
window.fetch = async (url, init) => {
  const resp = await real(url, init);
  if (!String(url).endsWith('/events')) return resp;
  asked.push([resp.status, (init.headers || {})['Last-Event-ID'] || null]);
  if (!cut) return resp;
  cut = false;
  let left = 3000;
  const body = resp.body.pipeThrough(new TransformStream({transform(chunk, out) {
    out.enqueue(chunk.slice(0, left));
    left -= chunk.length;
    if (left <= 0) out.terminate();
  }}));
  return new Response(body, {status: resp.status, headers: resp.headers});
};
import('/console/api.js').then(({follow}) => {
  const got = [];
  follow(callId, (type, body, sequence) => got.push([sequence, type]), (state) => {
    if (state === 'ended' || state === 'gone') {
      window.fetch = real;
      done({got, asked, state});
    }
  });
});"""

# How many times the page has read GET /v1/calls (the live calls: no ?since=) so far.
LIST_READS = """return performance.getEntriesByType('resource')
  .filter((e) => new URL(e.name).pathname === '/v1/calls' && !new URL(e.name).search).length;"""

SPEAKING = "return !!document.querySelector('#live-list li .badge.state-speaking')"

# The live list's button keeps the keyboard's focus across polls (its element is refilled, not replaced).
KEEPS_FOCUS = """const button = document.querySelector('#live-list li button');
button.focus();
const kept = () => document.activeElement === button && button.isConnected;
return new Promise((resolve) => setTimeout(() => resolve(kept()), 1200));"""


CONVERSATION_CHECK = """const done = arguments[arguments.length - 1];
import('/console/live.js').then(({Conversation}) => {
  const list = document.createElement('ol');
  const view = new Conversation(list);
  const shown = () => [...list.children].map((li) => [li.className, li.textContent]);
  const steps = [];
  view.handle('utterance.partial', {speaker: 'caller', channel: 0, text: 'I would'});
  view.handle('utterance.partial', {speaker: 'caller', channel: 0, text: 'I would like'});
  steps.push(shown());
  view.handle('utterance.final', {utterance: {speaker: 'agent', channel: 1, start: 3.0, end: 4.0, text: 'Sure.'}});
  const early = {speaker: 'caller', channel: 0, start: 1.0, end: 2.5, text: 'I would like <b>x</b>'};
  view.handle('utterance.final', {utterance: early});
  view.handle('playback.started', {action_id: 'r1'});
  view.handle('playback.interrupted', {action_id: 'r1', played_ms: 1500, heard_text: 'Your balance', reason: 'speech'});
  view.handle('call.dtmf', {digit: '5'});
  view.handle('transfer.started', {to: '+15550142', method: 'twiml'});
  steps.push(shown());
  done([steps, list.querySelectorAll('b').length]);
});"""
