"""The console in a real browser (Debian's chromium, driven headless by Selenium) over the running app: the page
shows what the app hears, the picture updates, a control changes the show (the frame log says so), a page
from another origin cannot steer it, and a sound taught through the page is then named by the running app. The password beyond loopback is tested at the unit level
(tests/test_console.py, the client's address faked): this machine has no address beyond loopback to bind to.

HEAR_AND_SEE_SCREENSHOTS=DIR saves each page at desktop and phone width there (docs/ holds them).
"""
from __future__ import annotations

import csv
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CHROMEDRIVER = "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMEDRIVER).exists() and shutil.which("chromium")),
                                reason="chromium and chromium-driver (apt; `make test` installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=5) as answer:
        return json.load(answer)


QUIET_LEAD_S = 10.0  # the room before the animals: the time a take needs with nothing else heard


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The installation on the bundled recordings, headless, with its console on. The recordings come after a
    quiet room, which is where the show's sound starts again each time a test sound has played (console.py's
    SteerableSource): so a take made while a test sound plays hears that sound alone."""
    import numpy as np
    import soundfile

    folder = tmp_path_factory.mktemp("console")
    port = free_port()
    room = folder / "room"
    room.mkdir()
    quiet = 0.0005 * np.random.default_rng(0).standard_normal(int(QUIET_LEAD_S * 16000))
    soundfile.write(room / "0_quiet_room.wav", quiet.astype(np.float32), 16000)
    for recording in (REPO_ROOT / "app" / "demo_audio").glob("*.mp3"):
        shutil.copy(recording, room)
    venue = folder / "venue.toml"
    # As in the end-to-end test: the gate opens for whatever the model makes of the animals, and a small dream.
    venue.write_text(f"console_port = {port}\nmin_confidence = 0.0\nsilence_dbfs = -90.0\ndream_size = 96\n"
                     f"width = 320\nheight = 180\ntaught_dir = \"{folder / 'taught'}\"\n")
    log = open(folder / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--input", str(room),
                             "--config", str(venue), "--frame-log", str(folder / "frames.tsv")],
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def hearing():
        if proc.poll() is not None:
            raise AssertionError((folder / "app.log").read_text()[-3000:])
        try:
            s = state(url)
        except OSError:
            return None
        return s.get("events") and s["server"]["alive"]
    try:
        wait_for(hearing, 240, "the app to hear its first sound")
        yield url, folder
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def own(url: str, body: dict, path: str = "api/control") -> None:
    """A request as the console's own page sends it."""
    with urllib.request.urlopen(url + "api/session", timeout=5) as answer:
        token = json.load(answer)["token"]
    request = urllib.request.Request(url + path, json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Origin": url.rstrip("/"), "X-CSRF-Token": token})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 202


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_the_page_shows_what_the_app_hears_and_the_picture_updates(app, browser):
    url, _ = app
    browser.get(url + "#see")
    heard = wait_for(lambda: text(browser, "heard") not in ("", "–", "listening") and text(browser, "heard"), 20,
                     "the page to name a sound")
    assert heard in {e["label"] for e in state(url)["events"]} | {state(url)["heard"]["label"]}
    first = wait_for(lambda: browser.find_element("id", "picture").get_attribute("src"), 10, "a picture")
    wait_for(lambda: browser.find_element("id", "picture").get_attribute("src") != first, 10, "a newer picture")
    assert browser.execute_script("return document.getElementById('picture').naturalWidth") > 0
    assert text(browser, "fps").endswith("fps") and "dBFS" in text(browser, "mic-db")
    assert text(browser, "state") in ("showing", "listening")  # with nothing wrong, the show's state itself


def test_a_control_on_the_page_changes_the_show(app, browser):
    url, folder = app
    browser.get(url + "#steer")
    button = wait_for(lambda: browser.find_element("id", "blackout"), 10, "the steer page")
    wait_for(lambda: state(url)["controls"]["blackout"] is False, 5, "the show to be lit")
    button.click()
    wait_for(lambda: state(url)["controls"]["blackout"], 5, "the blackout")

    def blacked_out():
        rows = list(csv.DictReader(open(folder / "frames.tsv"), delimiter="\t"))
        return [r for r in rows if r["source"] == "blackout"]
    rows = wait_for(blacked_out, 20, "the frame log (written in blocks) to show the blackout")
    assert all(float(r["mean_luminance"]) == 0.0 for r in rows)
    wait_for(lambda: "on" in button.get_attribute("class"), 5, "the button to show it")
    button.click()
    wait_for(lambda: not state(url)["controls"]["blackout"], 5, "the show to be lit again")


def test_a_page_from_another_origin_cannot_steer_the_show(app, browser, tmp_path):
    url, _ = app
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{elsewhere.server_address[1]}/")
        # A form-like request (no CORS preflight), as a hostile page would send it; the browser adds its Origin.
        status = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(arguments[0] + "api/control", {method: "POST", mode: "no-cors", credentials: "include",
                  headers: {"Content-Type": "text/plain"}, body: JSON.stringify({control: "blackout"})})
              .then(r => done(r.type), e => done("error " + e));""", url)
        assert status == "opaque"  # sent; its answer is not the page's to read
        # Then the console's own request: commands are applied in order, so once it shows, the other would have.
        hud = state(url)["controls"]["hud"]
        own(url, {"control": "hud"})
        wait_for(lambda: state(url)["controls"]["hud"] != hud, 5, "the console's own request")
        assert state(url)["controls"]["blackout"] is False
        own(url, {"control": "hud"})
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()


def take_through_the_page(url: str, browser, sound: str) -> None:
    """One take, as a person makes it: Record on the page, the count, then the sound, here a bundled recording
    played into the show's ring by the console's test sound (as if the microphone heard it). A short one first
    ends whatever test sound plays, so the show's own sound starts again at its quiet room."""
    before = int(text(browser, "teach-count"))
    own(url, {"sound": "sheep"}, "api/test-sound")
    browser.find_element("id", "teach-record").click()
    wait_for(lambda: "make the sound now" in text(browser, "teach-take"), 10, "the count to end")
    own(url, {"sound": sound}, "api/test-sound")
    wait_for(lambda: int(text(browser, "teach-count")) == before + 1, 20, "the take to be cut")


def test_a_sound_taught_through_the_page_is_named_by_the_running_app(app, browser):
    """Three takes cut from the show's own ring, a bundled picture, Save (the library, in a child process), then the
    same sound played again: the server's ear picks the new sound up and the page names it."""
    from selenium.webdriver.support.ui import Select

    url, folder = app
    browser.get(url + "#teach")
    wait_for(lambda: browser.find_elements("css selector", "#teach-seed option[value=cow]"), 10, "the teach page")
    for _ in range(3):
        take_through_the_page(url, browser, "cow")
    takes = browser.find_elements("css selector", "#teach-examples li")
    assert len(takes) == 3 and not browser.find_elements("css selector", "#teach-examples .problem")
    src = takes[0].find_element("tag name", "audio").get_attribute("src")
    with urllib.request.urlopen(src, timeout=5) as answer:
        assert answer.read(4) == b"RIFF"
    assert browser.execute_script("""
        const a = document.querySelector('#teach-examples audio');
        return new Promise((done) => { a.onloadedmetadata = () => done(a.duration); a.load(); });""") > 0.5
    browser.find_element("id", "teach-name").send_keys("bessie")
    Select(browser.find_element("id", "teach-seed")).select_by_value("cow")
    wait_for(lambda: text(browser, "teach-ready") == "Ready to save.", 10, "the page to be ready")
    browser.find_element("id", "teach-save").click()
    wait_for(lambda: "taught bessie" in text(browser, "teach-message"), 60, "the sound to be saved")
    saved = time.monotonic()
    assert (folder / "taught" / "bessie" / "manifest.json").is_file()
    assert wait_for(lambda: browser.find_elements("xpath", "//table[@id='teach-table']//td[text()='bessie']"), 10,
                    "the list to show it")
    assert browser.find_element("id", "teach-try").is_displayed()

    def named():
        if browser.find_elements("css selector", "#teach-heard.heard-it"):
            return True
        if time.monotonic() > named.next_play:  # the sound again, until the ear has it
            own(url, {"sound": "cow"}, "api/test-sound")
            named.next_play = time.monotonic() + 7.0
        return False
    named.next_play = 0.0
    wait_for(named, 60, "the page to name the taught sound")
    print(f"named {time.monotonic() - saved:.1f} s after it was saved")
    assert text(browser, "teach-heard") == "bessie"
    assert "bessie" in {e["label"] for e in state(url)["events"]}
    take_through_the_page(url, browser, "dog")  # the next sound begun: its take waits in the draft
    assert "take 1" in browser.find_element("css selector", "#teach-examples li").text
    named.next_play = 0.0
    wait_for(named, 30, "the taught sound named again")  # and the page is left as the screenshots show it


def test_screenshots_of_each_page(app, browser, tmp_path):
    url, _ = app
    out = Path(os.environ.get("HEAR_AND_SEE_SCREENSHOTS", tmp_path))
    for width, height, name in ((1280, 900, "desktop"), (390, 844, "phone")):
        browser.set_window_size(width, height)
        for page in ("see", "steer", "settings", "teach"):
            browser.get(url + "#" + page)
            if page == "see":
                wait_for(lambda: browser.execute_script(
                    "return document.getElementById('picture').naturalWidth") > 0, 10, "the picture")
                first = browser.find_element("id", "picture").get_attribute("src")  # the screen as it is now, not
                wait_for(lambda: browser.find_element("id", "picture").get_attribute("src") != first, 10,
                         "a newer picture")  # as it was when the page opened
            else:
                wait_for(lambda: browser.find_element("id", "page-" + page).is_displayed(), 10, f"the {page} page")
            if page == "settings":
                wait_for(lambda: browser.find_elements("css selector", "#settings-table tbody tr"), 10, "settings")
            if page == "teach":
                wait_for(lambda: browser.find_elements("css selector", "#teach-table tbody tr"), 10, "taught sounds")
            path = out / f"console_{page}_{name}.png"
            browser.save_screenshot(str(path))
            assert path.stat().st_size > 10_000
