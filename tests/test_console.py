"""The console: opening hours, the password, every endpoint and every bad request (Starlette's TestClient, the
client's address faked to stand on this machine or beyond it), and what the loop's side does per frame."""
from __future__ import annotations

import io
import json
import queue
import socket
import time
from datetime import datetime
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from app.config import ConfigError, Settings, load_settings, save_setting
from app.console import Console, Shared, build_app, jpeg
from app.controls import Bindings, Controls, class_list, parse_chord
from app.hours import is_open, parse_hours
from app.modes import Plan, Scene, ShowState
from app.passwords import check_password, hash_password, is_password_hash
from models import taught

HERE = ("127.0.0.1", 50000)
AWAY = ("192.0.2.7", 50000)      # TEST-NET-1: an address beyond this machine
OWN = {"origin": "http://127.0.0.1"}
PASSWORD = "correct horse"
PASSWORD_HASH = hash_password(PASSWORD)


# --- opening hours ---------------------------------------------------------------------------------------------

MONDAY = datetime(2026, 12, 7)  # a Monday


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MONDAY.replace(day=7 + day, hour=hour, minute=minute)


def test_no_hours_is_always_open():
    assert is_open(parse_hours(""), at(6, 3))


def test_every_day_hours():
    hours = parse_hours("10:00-18:00")
    assert not is_open(hours, at(0, 9, 59))
    assert is_open(hours, at(0, 10, 0))
    assert is_open(hours, at(6, 17, 59))
    assert not is_open(hours, at(3, 18, 0))


def test_hours_by_weekday_and_past_midnight():
    hours = parse_hours("mon-fri 10:00-18:00, sat-sun 12:00-17:00, fri 20:00-02:00")
    assert is_open(hours, at(0, 11)) and not is_open(hours, at(5, 11)) and is_open(hours, at(5, 12))
    assert is_open(hours, at(4, 23)) and is_open(hours, at(5, 1, 59)) and not is_open(hours, at(5, 2))
    assert not is_open(hours, at(0, 1))  # sunday night is not friday night
    assert parse_hours("sun-mon 09:00-10:00")[0].days == {6, 0}


def test_open_now_override():
    hours = parse_hours("10:00-18:00")
    assert is_open(hours, at(0, 22), open_override=True)


@pytest.mark.parametrize("text", ["10-18", "10:00", "mon 10:00", "xyz 10:00-12:00", "mon-funday 10:00-11:00",
                                  "25:00-26:00", "10:61-11:00", "10:00-10:00"])
def test_bad_hours_say_what_they_take(text):
    with pytest.raises(ValueError):
        parse_hours(text)
    with pytest.raises(ConfigError, match="hours"):
        load_settings(hours=text)


# --- the password and where the console may listen ---------------------------------------------------------------

def test_password_hash_round_trip():
    assert is_password_hash(PASSWORD_HASH) and check_password(PASSWORD, PASSWORD_HASH)
    assert not check_password("wrong horse", PASSWORD_HASH)
    assert hash_password(PASSWORD) != PASSWORD_HASH  # salted
    with pytest.raises(ValueError):
        hash_password("short")


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$3$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!$??",
                                   "md5$16384$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="])
def test_a_setting_that_is_not_a_hash_is_refused(stored):
    assert not check_password(PASSWORD, stored)
    with pytest.raises(ConfigError, match="console_password_hash"):
        load_settings(console_password_hash=stored)


def test_console_beyond_loopback_needs_a_password():
    with pytest.raises(ConfigError, match="password"):
        load_settings(console_port=8080, console_host="0.0.0.0")
    assert load_settings(console_port=8080, console_host="127.0.0.2").console_port == 8080
    assert load_settings(console_port=8080, console_host="0.0.0.0", console_password_hash=PASSWORD_HASH)
    assert load_settings(console_port=0, console_host="0.0.0.0").console_port == 0  # off: nothing to guard


def test_the_cli_refuses_a_console_beyond_loopback_without_a_password(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    venue = tmp_path / "venue.toml"
    venue.write_text('console_port = 8080\nconsole_host = "0.0.0.0"\n')
    proc = subprocess.run([sys.executable, "-m", "app.cli", "run", "--headless", "--config", str(venue)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "password" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_console_password_command_stores_a_hash(tmp_path, monkeypatch, capsys):
    from app import cli

    venue = tmp_path / "venue.toml"
    venue.write_text("# the gallery's own note\nmode = \"gallery\"\n")
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["console-password", "--config", str(venue)]) == 0
    text = venue.read_text()
    assert "# the gallery's own note" in text
    assert check_password(PASSWORD, load_settings(venue).console_password_hash)
    answers = iter([PASSWORD, "another one"])
    assert cli.main(["console-password", "--config", str(venue)]) == 2
    assert venue.read_text() == text and "differ" in capsys.readouterr().err


def test_save_setting_is_checked_and_keeps_comments(tmp_path):
    venue = tmp_path / "venue.toml"
    venue.write_text("# note\nvignette = 0.2\n")
    save_setting(venue, "hours", "10:00-18:00")
    assert load_settings(venue).hours == "10:00-18:00" and "# note" in venue.read_text()
    save_setting(venue, "console_host", "0.0.0.0")  # alone it is fine: the console is off
    before = venue.read_text()
    with pytest.raises(ConfigError, match="password"):  # with a port and no password it is not
        save_setting(venue, "console_port", 8080)
    assert venue.read_text() == before, "nothing written"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


# --- the web side ----------------------------------------------------------------------------------------------

def shared_for(tmp_path=None, password_hash=None, local_server=True, mode="performance", ring=None,
               taught_dir=None) -> Shared:
    config = None
    if tmp_path is not None:
        config = tmp_path / "venue.toml"
        config.write_text("# the venue\nvignette = 0.2\n")
    settings = Settings(mode=mode, console_password_hash=password_hash,
                        **({"taught_dir": str(taught_dir)} if taught_dir else {}))
    bindings = Bindings(mode, class_list("animals"), parse_chord(settings.exit_chord))
    return Shared(settings, config, bindings, local_server, ring)


def client_for(shared: Shared, where=HERE) -> TestClient:
    return TestClient(build_app(shared), base_url="http://127.0.0.1", client=where)


def token_of(client: TestClient) -> str:
    return client.get("/api/session").json()["token"]


def post(client: TestClient, path: str, body, token: str | None = None, **headers):
    return client.post(path, json=body, headers={**OWN, "x-csrf-token": token or "", **headers})


def test_the_page_and_its_assets_are_served():
    client = client_for(shared_for())
    page = client.get("/")
    assert page.status_code == 200 and "console.js" in page.text
    assert client.get("/static/console.js").status_code == 200
    assert client.get("/static/console.css").status_code == 200
    assert client.get("/static/nothing.js").status_code == 404


def test_on_this_machine_no_password_is_asked():
    client = client_for(shared_for())
    session = client.get("/api/session").json()
    assert session["logged_in"] and session["token"]
    assert client.get("/api/state").status_code == 200


def test_a_page_of_another_name_on_this_machine_must_log_in():
    """DNS rebinding: another site's name pointed at 127.0.0.1 reaches the console as that name."""
    client = client_for(shared_for(password_hash=PASSWORD_HASH))
    assert client.get("/api/session", headers={"host": "127.0.0.1:8080"}).json()["logged_in"]
    assert client.get("/api/session", headers={"host": "localhost:8080"}).json()["logged_in"]
    assert client.get("/api/session", headers={"host": "[::1]:8080"}).json()["logged_in"]
    assert not client.get("/api/session", headers={"host": "evil.example:8080"}).json()["logged_in"]
    assert client.get("/api/state", headers={"host": "evil.example:8080"}).status_code == 401


def test_beyond_this_machine_the_password_is_required():
    shared = shared_for(password_hash=PASSWORD_HASH)
    client = client_for(shared, AWAY)
    assert client.get("/api/session").json() == {"logged_in": False, "token": None, "password_set": True}
    for path in ("/api/state", "/api/settings", "/api/picture.jpg", "/api/stream", "/api/teach",
                 "/api/teach/takes/1.wav", "/api/teach/picture.jpg", "/api/teach/seeds/cow.jpg"):
        assert client.get(path).status_code == 401, path
    assert post(client, "/api/control", {"control": "blackout"}).status_code == 401
    for path in ("/api/teach/record", "/api/teach/save", "/api/teach/forget", "/api/teach/picture"):
        assert post(client, path, {}).status_code == 401, path
    assert post(client, "/api/login", {"password": "wrong"}).status_code == 401
    answer = post(client, "/api/login", {"password": PASSWORD})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/state").status_code == 200
    token = token_of(client)
    assert post(client, "/api/control", {"control": "blackout"}, token).status_code == 202
    assert post(client, "/api/logout", {}, token).status_code == 200
    assert client.get("/api/state").status_code == 401


def test_login_attempts_are_throttled():
    app = build_app(shared_for(password_hash=PASSWORD_HASH))
    client = TestClient(app, base_url="http://127.0.0.1", client=AWAY)
    codes = [post(client, "/api/login", {"password": f"guess {i}"}).status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    locked = post(client, "/api/login", {"password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0, "even the right one waits"
    # another address is not locked out by this one's guesses
    assert post(TestClient(app, base_url="http://127.0.0.1", client=("192.0.2.8", 1)), "/api/login", {"password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("body, status", [
    ("{not json", 400), ("[1, 2]", 400), ('{"control": "explode"}', 400), ('{"control": "intensity", "value": "loud"}', 400),
    ('{"control": "class", "value": "unicorn"}', 400), ('{"control": "freeze", "value": [1]}', 400),
    ('{"control": "freeze", "value": "yes"}', 400), ('{"control": "zoom"}', 400),
])
def test_bad_control_requests_are_4xx(body, status):
    shared = shared_for()
    client = client_for(shared)
    answer = client.post("/api/control", content=body, headers={**OWN, "x-csrf-token": token_of(client),
                                                                "content-type": "application/json"})
    assert answer.status_code == status and answer.json()["error"]
    assert shared.commands.empty(), "nothing reaches the show"


def test_an_oversized_request_is_413():
    client = client_for(shared_for())
    answer = post(client, "/api/control", {"control": "layer", "value": "x" * 100_000}, token_of(client))
    assert answer.status_code == 413


def test_requests_from_another_origin_are_refused():
    shared = shared_for()
    client = client_for(shared)
    token = token_of(client)
    body = {"control": "blackout"}
    assert client.post("/api/control", json=body, headers={"x-csrf-token": token}).status_code == 403  # no origin
    assert post(client, "/api/control", body, token, origin="http://evil.example").status_code == 403
    assert post(client, "/api/control", body, token, origin="http://127.0.0.1:81").status_code == 403
    assert post(client, "/api/control", body, "not the token").status_code == 403
    assert post(client, "/api/control", body, None).status_code == 403
    assert shared.commands.empty()
    assert post(client, "/api/control", body, token).status_code == 202
    assert shared.commands.get_nowait() == ("control", "blackout")


def test_controls_open_restart_and_test_sound_are_queued():
    shared = shared_for()
    client = client_for(shared)
    token = token_of(client)
    assert post(client, "/api/control", {"control": "class", "value": "cow"}, token).status_code == 202
    assert post(client, "/api/control", {"control": "intensity", "value": 0.4}, token).status_code == 202
    assert post(client, "/api/open", {"open": True}, token).status_code == 202
    assert post(client, "/api/open", {"open": "yes"}, token).status_code == 400
    assert post(client, "/api/server/restart", {}, token).status_code == 202
    assert post(client, "/api/test-sound", {"sound": "cow"}, token).status_code == 202
    assert post(client, "/api/test-sound", {"sound": "../../etc/passwd"}, token).status_code == 400
    got = [shared.commands.get_nowait()[0] for _ in range(5)]
    assert got == ["control", "control", "open_now", "restart_server", "test_sound"]


def test_a_remote_server_cannot_be_restarted_from_here():
    client = client_for(shared_for(local_server=False))
    assert post(client, "/api/server/restart", {}, token_of(client)).status_code == 409


def test_a_full_command_queue_is_503(monkeypatch):
    shared = shared_for()
    shared.commands = queue.Queue(1)
    client = client_for(shared)
    token = token_of(client)
    assert post(client, "/api/control", {"control": "hud"}, token).status_code == 202
    assert post(client, "/api/control", {"control": "hud"}, token).status_code == 503


def test_settings_are_listed_with_what_they_take(tmp_path):
    client = client_for(shared_for(tmp_path))
    listed = {s["key"]: s for s in client.get("/api/settings").json()["settings"]}
    assert "console_password_hash" not in listed
    assert listed["vignette"]["takes"] == "a number within 0..1" and not listed["vignette"]["live"]
    assert listed["hours"]["live"]


def test_settings_are_validated_and_saved(tmp_path):
    shared = shared_for(tmp_path)
    client = client_for(shared)
    token = token_of(client)
    venue = shared.config_path
    assert post(client, "/api/settings", {"key": "vignette", "value": 2}, token).status_code == 400
    assert post(client, "/api/settings", {"key": "nonsense", "value": 1}, token).status_code == 400
    assert post(client, "/api/settings", {"key": "console_password_hash", "value": PASSWORD_HASH}, token).status_code == 400
    assert post(client, "/api/settings", {"key": "console_host", "value": "0.0.0.0"}, token).status_code == 200
    refused = post(client, "/api/settings", {"key": "console_port", "value": 8080}, token)
    assert refused.status_code == 400 and "password" in refused.json()["error"]
    assert "console_port" not in venue.read_text()
    answer = post(client, "/api/settings", {"key": "hours", "value": "10:00-18:00"}, token)
    assert answer.status_code == 200 and answer.json()["live"]
    assert shared.commands.get_nowait() == ("setting", "hours", "10:00-18:00")
    assert post(client, "/api/settings", {"key": "vignette", "value": 0.5}, token).json() == {"saved": True,
                                                                                              "live": False}
    assert load_settings(venue).vignette == 0.5 and "# the venue" in venue.read_text()


def test_settings_without_a_venue_file_cannot_be_saved():
    client = client_for(shared_for())
    assert post(client, "/api/settings", {"key": "vignette", "value": 0.5}, token_of(client)).status_code == 409


def test_healthz_says_why_it_is_unhealthy():
    shared = shared_for()
    client = client_for(shared, AWAY)  # for the venue's IT: no login
    answer = client.get("/healthz")
    assert answer.status_code == 503 and "no frame drawn" in answer.text and "server" in answer.text
    shared.drawing_at, shared.server_alive = time.monotonic(), True
    assert client.get("/healthz").status_code == 200
    shared.server_alive = False
    assert client.get("/healthz").text.strip() == "the inference server does not answer"


def test_metrics_in_prometheus_text():
    shared = shared_for()
    shared.metrics["fps"].set(29)
    shared.metrics["events"].labels("cow").inc()
    text = client_for(shared, AWAY).get("/metrics").text
    assert "hear_and_see_fps 29.0" in text
    assert 'hear_and_see_events_total{label="cow"} 1.0' in text
    assert "hear_and_see_server_round_trip_seconds" in text and "hear_and_see_server_restarts" in text


def test_the_picture_is_served_once_there_is_one():
    shared = shared_for()
    client = client_for(shared)
    assert client.get("/api/picture.jpg").status_code == 404
    shared.picture = (1, jpeg(np.zeros((72, 128, 3), np.uint8)))
    answer = client.get("/api/picture.jpg")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert answer.content[:2] == b"\xff\xd8"


def test_unknown_paths_and_methods_are_4xx():
    client = client_for(shared_for())
    assert client.get("/nothing").status_code == 404
    assert client.put("/api/control", json={}).status_code == 405
    assert client.get("/api/control").status_code == 405


# --- teach: a sound of the venue's own, from the console -------------------------------------------------------

def teacher(tmp_path, monkeypatch, ring=None):
    """A console whose takes begin at once (no countdown), its taught sounds in tmp_path/taught."""
    monkeypatch.setattr("app.console.COUNTDOWN_S", 0)
    shared = shared_for(ring=ring, taught_dir=tmp_path / "taught")
    client = client_for(shared)
    return shared, client, token_of(client)


def sound_file(tmp_path, freq=700.0):
    from tests.test_taught import tone, wav

    return wav(tmp_path / f"sound_{freq:.0f}.wav", tone(0.9, freq=freq, lead=0.5))


def record(client, token, ring, sound):
    """A take through the console while `sound` plays into the ring, as the microphone would hear it."""
    from app.capture import FileSource

    source = FileSource(ring, sound, loop=False).start()
    try:
        return post(client, "/api/teach/record", {}, token)
    finally:
        source.stop()


def good_takes(shared, n=3):
    from tests.test_taught import tone

    for _ in range(n):
        shared.draft.add(tone(0.9)[7000:], None)


def test_a_sound_recorded_through_the_console_is_taught_listed_and_forgotten(tmp_path, monkeypatch):
    """The happy path, over the API as the page uses it: three takes cut from the show's ring, each playable; a
    bundled picture; Save (the library, in a child process); the list; Forget."""
    from app.capture import RingBuffer

    ring = RingBuffer()
    shared, client, token = teacher(tmp_path, monkeypatch, ring)
    sound = sound_file(tmp_path)
    for i in range(1, 4):
        answer = record(client, token, ring, sound)
        assert answer.status_code == 200, answer.text
        taken = answer.json()["draft"]["examples"][-1]
        assert taken["id"] == i and taken["problem"] is None
        assert 0.9 <= taken["seconds"] <= 1.6 and -20 < taken["dbfs"] < 0  # the tone, cut from the quiet around it
    wave = client.get("/api/teach/takes/2.wav")
    assert wave.status_code == 200 and wave.content[:4] == b"RIFF" and wave.headers["content-type"] == "audio/wav"
    assert post(client, "/api/teach/seed", {"seed": "cow"}, token).json()["draft"]["picture"] == "seed:cow"
    assert client.get("/api/teach/picture.jpg").content[:2] == b"\xff\xd8"
    assert not (tmp_path / "taught").exists(), "nothing is in the taught sounds' folder before it is saved"
    saved = post(client, "/api/teach/save", {"name": "zap", "as": None}, token)
    assert saved.status_code == 200, saved.text
    assert saved.json()["shows"] == "zap" and saved.json()["draft"] == {"examples": [], "picture": None}
    listed = client.get("/api/teach").json()
    assert [(t["name"], t["shows"], t["examples"]) for t in listed["taught"]] == [("zap", "zap", 3)]
    assert "cow" in listed["seeds"] and "cow" in listed["builtins"] and listed["examples"] == [3, 10]
    assert client.get("/api/teach/sounds/zap.jpg").content[:2] == b"\xff\xd8"
    assert not list(shared.draft.folder.iterdir()), "the draft's files went with it"
    assert post(client, "/api/teach/forget", {"name": "zap"}, token).status_code == 200
    assert client.get("/api/teach").json()["taught"] == []
    shared.draft.close()


def test_a_taught_sound_shown_as_a_builtin_needs_no_picture(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared)
    post(client, "/api/teach/seed", {"seed": "dog"}, token)  # set aside: a sound shown as cow shows cow's
    saved = post(client, "/api/teach/save", {"name": "moo", "as": "cow"}, token)
    assert saved.status_code == 200, saved.text
    assert client.get("/api/teach").json()["taught"][0]["shows"] == "cow"
    assert client.get("/api/teach/sounds/moo.jpg").status_code == 200  # cow's own picture


def test_the_picture_upload_is_checked_and_kept_in_the_draft(tmp_path, monkeypatch):
    from tests.test_taught import picture

    shared, client, token = teacher(tmp_path, monkeypatch)
    png = picture(tmp_path / "p.png", size=(300, 200)).read_bytes()
    answer = post_picture(client, token, png, "image/png")
    assert answer.status_code == 200 and answer.json()["draft"]["picture"] == "upload"
    assert client.get("/api/teach/picture.jpg").content[:2] == b"\xff\xd8"
    assert [p.suffix for p in shared.draft.folder.iterdir()] == [".png"]
    post_picture(client, token, png, "image/png")
    assert len(list(shared.draft.folder.iterdir())) == 1, "a new upload replaces the last"
    shared.draft.close()


def test_teaching_from_the_console_loads_no_torch(tmp_path):
    """The console lives in the show's process, which never loads torch: takes, pictures, seeds and the list are
    checked with models/taught.py's rules, which need none (the child that saves loads it)."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    probe = f"""
import sys
import app.console
assert "torch" not in sys.modules, "importing the console"
from pathlib import Path
from starlette.testclient import TestClient
from tests.test_console import shared_for, token_of, post, post_picture, good_takes
from tests.test_taught import picture
from app.console import build_app
from models import taught
shared = shared_for(taught_dir=Path({str(tmp_path)!r}) / "taught")
client = TestClient(build_app(shared), base_url="http://127.0.0.1", client=("127.0.0.1", 1))
token = token_of(client)
good_takes(shared)
import soundfile
taught.cut_to_sound(soundfile.read(shared.draft.examples[0]["path"], dtype="float32")[0])  # a take's check
assert post_picture(client, token, picture(Path({str(tmp_path)!r}) / "p.png").read_bytes(), "image/png").status_code == 200
assert post(client, "/api/teach/seed", {{"seed": "cow"}}, token).status_code == 200
assert client.get("/api/teach").status_code == 200 and client.get("/api/teach/seeds/cow.jpg").status_code == 200
assert post(client, "/api/teach/save", {{"name": "Bad!"}}, token).status_code == 400
print(sorted(m for m in ("torch", "librosa", "models.audio") if m in sys.modules))
shared.draft.close()
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def post_picture(client, token, data: bytes, content_type: str):
    return client.post("/api/teach/picture", content=data,
                       headers={**OWN, "x-csrf-token": token, "content-type": content_type})


# Each bad input: a 4xx that says why, and nothing stored, in the draft or among the taught sounds.

def nothing_taught(tmp_path) -> bool:
    root = tmp_path / "taught"
    return not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("name, message", [("Moo!", "not a name"), ("", "not a name"), ("dog", "built-in"),
                                           (7, "not a name"), ("x" * 40, "not a name")])
def test_teach_a_bad_name_is_400(tmp_path, monkeypatch, name, message):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared)
    post(client, "/api/teach/seed", {"seed": "cow"}, token)
    answer = post(client, "/api/teach/save", {"name": name}, token)
    assert answer.status_code == 400 and message in answer.json()["error"]
    assert nothing_taught(tmp_path) and len(shared.draft.examples) == 3
    shared.draft.close()


def test_teach_too_few_examples_is_400(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared, 2)
    post(client, "/api/teach/seed", {"seed": "cow"}, token)
    answer = post(client, "/api/teach/save", {"name": "zap"}, token)
    assert answer.status_code == 400 and answer.json()["error"] == "2 examples: record 3 to 10 of the sound"
    assert nothing_taught(tmp_path)
    shared.draft.close()


def test_teach_too_many_examples_is_409(tmp_path, monkeypatch):
    from app.capture import RingBuffer

    shared, client, token = teacher(tmp_path, monkeypatch, RingBuffer())
    good_takes(shared, 10)
    answer = post(client, "/api/teach/record", {}, token)
    assert answer.status_code == 409 and "already 10 examples" in answer.json()["error"]
    assert len(shared.draft.examples) == 10
    shared.draft.close()


def test_teach_a_take_with_no_sound_is_422(tmp_path, monkeypatch):
    from app.capture import RingBuffer

    monkeypatch.setattr("app.takes.WAIT_FOR_SOUND_S", 0.3)
    shared, client, token = teacher(tmp_path, monkeypatch, RingBuffer())
    answer = post(client, "/api/teach/record", {}, token)
    assert answer.status_code == 422 and answer.json()["error"].startswith("no sound in 0 s")
    assert shared.draft.examples == [] and shared.draft.take is None
    assert client.get("/api/state").json()["take"] is None


def test_teach_a_clipped_take_is_marked_and_saving_it_is_400(tmp_path, monkeypatch):
    from app.capture import RingBuffer
    from tests.test_taught import tone, wav

    ring = RingBuffer()
    shared, client, token = teacher(tmp_path, monkeypatch, ring)
    loud = wav(tmp_path / "loud.wav", np.clip(tone(0.9, level=3.0, lead=0.5), -1, 1))
    answer = record(client, token, ring, loud)
    assert answer.status_code == 200 and "clipped" in answer.json()["draft"]["examples"][0]["problem"]
    good_takes(shared, 2)
    post(client, "/api/teach/seed", {"seed": "cow"}, token)
    refused = post(client, "/api/teach/save", {"name": "zap"}, token)
    assert refused.status_code == 400 and refused.json()["error"].startswith("take 1: clipped")
    assert refused.json()["error"].endswith("drop it") and nothing_taught(tmp_path)
    assert post(client, "/api/teach/drop", {"example": 1}, token).json()["draft"]["examples"][0]["id"] == 2
    shared.draft.close()


def test_teach_without_a_picture_is_400(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared)
    answer = post(client, "/api/teach/save", {"name": "zap"}, token)
    assert answer.status_code == 400 and "choose a picture" in answer.json()["error"] and nothing_taught(tmp_path)
    shared.draft.close()


def test_teach_a_name_already_taught_is_409(tmp_path, monkeypatch):
    from tests.test_taught import examples

    taught.teach("zap", examples(tmp_path / "in"), "seed:cow", taught_dir=tmp_path / "taught")
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared)
    post(client, "/api/teach/seed", {"seed": "cow"}, token)
    answer = post(client, "/api/teach/save", {"name": "zap"}, token)
    assert answer.status_code == 409 and "already taught" in answer.json()["error"]
    assert len(shared.draft.examples) == 3
    shared.draft.close()


def test_teach_an_unknown_builtin_is_400(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared)
    answer = post(client, "/api/teach/save", {"name": "zap", "as": "unicorn"}, token)
    assert answer.status_code == 400 and "not a built-in" in answer.json()["error"] and nothing_taught(tmp_path)
    shared.draft.close()


def test_teach_an_upload_too_large_is_413(tmp_path, monkeypatch):
    monkeypatch.setattr("app.console.MAX_PICTURE_BYTES", 1000)
    shared, client, token = teacher(tmp_path, monkeypatch)
    answer = post_picture(client, token, b"\xff\xd8" + b"x" * 2000, "image/jpeg")
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    assert shared.draft.picture is None


@pytest.mark.parametrize("content_type", ["text/plain", "image/gif", ""])
def test_teach_an_upload_of_another_type_is_415(tmp_path, monkeypatch, content_type):
    shared, client, token = teacher(tmp_path, monkeypatch)
    answer = post_picture(client, token, b"GIF89a", content_type)
    assert answer.status_code == 415 and "JPEG, PNG or WebP" in answer.json()["error"]
    assert shared.draft.picture is None


def test_teach_an_upload_that_is_not_an_image_is_400(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    answer = post_picture(client, token, b"this is not a picture", "image/png")
    assert answer.status_code == 400 and answer.json()["error"].startswith("picture the upload: not a readable image")
    assert shared.draft.picture is None and not list(shared.draft.folder.iterdir())
    shared.draft.close()


def test_teach_a_truncated_upload_is_400(tmp_path, monkeypatch):
    from PIL import Image

    shared, client, token = teacher(tmp_path, monkeypatch)
    out = io.BytesIO()
    Image.effect_noise((400, 300), 60).convert("RGB").save(out, "JPEG")
    answer = post_picture(client, token, out.getvalue()[:len(out.getvalue()) // 2], "image/jpeg")
    assert answer.status_code == 400 and "not a readable image" in answer.json()["error"]
    assert shared.draft.picture is None and not list(shared.draft.folder.iterdir())
    shared.draft.close()


def test_teach_an_image_bomb_is_400(tmp_path, monkeypatch):
    from PIL import Image

    shared, client, token = teacher(tmp_path, monkeypatch)
    out = io.BytesIO()
    Image.new("1", (8000, 8000)).save(out, "PNG")  # 64 megapixels in a few kB: refused before it is decoded
    answer = post_picture(client, token, out.getvalue(), "image/png")
    assert answer.status_code == 400 and "more than 40 megapixels" in answer.json()["error"]
    assert shared.draft.picture is None
    shared.draft.close()


def test_teach_an_unknown_seed_is_400(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    for seed in ("unicorn", "../../etc", None, ["cow"]):
        answer = post(client, "/api/teach/seed", {"seed": seed}, token)
        assert answer.status_code == 400 and "no bundled picture" in answer.json()["error"]
    assert shared.draft.picture is None
    assert client.get("/api/teach/seeds/unicorn.jpg").status_code == 404


@pytest.mark.parametrize("path", ["/api/teach/save", "/api/teach/forget", "/api/teach/seed", "/api/teach/drop"])
@pytest.mark.parametrize("body", ["{not json", "[1, 2]"])
def test_teach_malformed_json_is_400(tmp_path, monkeypatch, path, body):
    shared, client, token = teacher(tmp_path, monkeypatch)
    answer = client.post(path, content=body, headers={**OWN, "x-csrf-token": token,
                                                      "content-type": "application/json"})
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]


def test_teach_forgetting_a_name_not_taught_is_404(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    for name in ("nothing", "../taught", ""):
        answer = post(client, "/api/teach/forget", {"name": name}, token)
        assert answer.status_code == 404 and "is not a taught sound" in answer.json()["error"]
    assert post(client, "/api/teach/forget", {"name": 3}, token).status_code == 400


def test_teach_dropping_a_take_not_in_the_draft_is_4xx(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared, 1)
    assert post(client, "/api/teach/drop", {"example": 9}, token).status_code == 404
    assert post(client, "/api/teach/drop", {"example": "1"}, token).status_code == 400
    assert client.get("/api/teach/takes/9.wav").status_code == 404
    assert len(shared.draft.examples) == 1
    shared.draft.close()


def test_teach_from_another_origin_or_without_the_token_is_403(tmp_path, monkeypatch):
    shared, client, token = teacher(tmp_path, monkeypatch)
    good_takes(shared)
    for headers in ({"origin": "http://evil.example", "x-csrf-token": token}, {**OWN, "x-csrf-token": "nope"}):
        assert client.post("/api/teach/clear", json={}, headers=headers).status_code == 403
        assert client.post("/api/teach/picture", content=b"x", headers={**headers, "content-type": "image/png"}
                           ).status_code == 403
    assert len(shared.draft.examples) == 3
    assert post(client, "/api/teach/clear", {}, token).json()["draft"]["examples"] == []
    shared.draft.close()


def test_teach_a_second_take_at_once_is_409_and_closed_hours_refuse_takes(tmp_path, monkeypatch):
    from app.capture import RingBuffer

    shared, client, token = teacher(tmp_path, monkeypatch, RingBuffer())
    shared.draft.lock.acquire()  # a take under way
    answer = post(client, "/api/teach/record", {}, token)
    assert answer.status_code == 409 and "busy" in answer.json()["error"]
    shared.draft.lock.release()
    shared.snapshot = {"open": False}
    answer = post(client, "/api/teach/record", {}, token)
    assert answer.status_code == 409 and "opening hours" in answer.json()["error"]


def test_the_childs_refusal_comes_back_as_its_one_line(tmp_path):
    from app.takes import teach_in_child
    from tests.test_taught import examples, wav

    takes = examples(tmp_path / "in", 3)
    wav(takes[1], np.zeros(16000, np.float32))
    with pytest.raises(taught.TaughtError) as refused:
        teach_in_child("zap", takes, "seed:cow", None, tmp_path / "taught")
    assert str(refused.value).startswith(f"example {takes[1]}: silent") and "\n" not in str(refused.value)
    assert nothing_taught(tmp_path)


def test_a_take_waits_for_the_countdown_and_the_onset_and_ends_when_the_sound_dies_away():
    """app/takes.Take, polled as the console's worker polls it, on a clock of its own."""
    from app.capture import RingBuffer
    from app.takes import Take
    from tests.test_taught import tone

    now = [0.0]
    ring = RingBuffer()
    take = Take(ring, countdown=3.0, clock=lambda: now[0])
    sound = tone(0.9, freq=700.0, lead=0.0)
    quiet = lambda seconds: 0.0005 * np.random.default_rng(1).standard_normal(int(seconds * 16000))  # noqa: E731
    # a sound during the countdown (it begins nothing), then one at 3.9 s
    stream = np.concatenate([quiet(1.0), sound, quiet(2.0), sound, quiet(1.0)]).astype(np.float32)
    states = []
    for i in range(0, len(stream), 800):  # 50 ms blocks, as a file source writes them
        ring.write(stream[i:i + 800])
        now[0] += 0.05
        if take.poll() is not None:
            break
        states.append((round(now[0], 2), take.state))
    assert take.state == "done"
    assert {state for t, state in states if t < 3.0} == {"countdown"}
    assert {state for t, state in states if 3.0 < t < 3.9} == {"waiting"}
    began = next(t for t, state in states if state == "recording")
    assert 3.9 <= began <= 4.0 and 0.9 <= len(take.samples) / 16000 <= 1.6


# --- the loop's side -------------------------------------------------------------------------------------------

class FakeDisplay:
    def __init__(self):
        self.reads = 0

    def read_pixels(self):
        self.reads += 1
        return np.full((72, 128, 3), 90, np.uint8)


class FakeSource:
    def __init__(self):
        self.polls = self.stops = 0

    def poll(self, now, ready):
        self.polls += 1

    def stop(self):
        self.stops += 1


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_for(port: int = 0, hours: str = "", mode: str = "performance"):
    from app.capture import RingBuffer

    settings = Settings(mode=mode, console_port=port, hours=hours)
    bindings = Bindings(mode, class_list("animals"), parse_chord(settings.exit_chord))
    client = SimpleNamespace(alive=True, reconnects=0, round_trip_ms=3.0, address="tcp://127.0.0.1:1")
    source = FakeSource()
    return Console(settings, None, bindings, client, None, RingBuffer(), source, time.monotonic()), source


def plan_for(label=None):
    return Plan(Scene("showing", label, 0.9, "fallback", [], "showing"), None, 0.05)


def test_console_off_starts_no_server_and_changes_nothing():
    console, _ = console_for()
    controls = Controls(zoom=0.05)
    assert console.web is None and console.address is None
    assert console.turn(time.monotonic(), controls, ShowState(), plan_for(), [], FakeDisplay()) == controls
    console.stop()


def test_closed_hours_darken_the_screen_and_close_the_source(monkeypatch):
    console, source = console_for(hours="10:00-18:00")
    monkeypatch.setattr("app.console.datetime", SimpleNamespace(now=lambda: at(0, 20)))
    controls = console.turn(100.0, Controls(zoom=0.05), ShowState(), plan_for(), [], FakeDisplay())
    assert not console.open and controls.blackout and source.stops == 1
    console.source.poll(100.1, True)
    assert source.polls == 0, "the microphone stays closed"
    monkeypatch.setattr("app.console.datetime", SimpleNamespace(now=lambda: at(1, 10)))
    controls = console.turn(102.0, controls, ShowState(), plan_for(), [], FakeDisplay())
    assert console.open and not controls.blackout
    console.source.poll(102.1, True)
    assert source.polls == 1


def test_console_commands_go_through_the_same_bindings_as_osc_and_the_picture_only_while_watched():
    console, _ = console_for(port=free_port())
    display = FakeDisplay()
    try:
        controls, now = Controls(zoom=0.05), time.monotonic()
        result = SimpleNamespace(label="cow", confidence=0.8, tags=(("Moo", 0.7),))
        for i in range(30):  # a second of frames with nobody watching
            controls = console.turn(now + i / 30, controls, ShowState(), plan_for(), [result] if i == 3 else [],
                                    display)
        assert display.reads == 0, "nobody watches: the screen is not read back"
        assert console.shared.snapshot["events"][0]["label"] == "cow"
        console.shared.command("control", "blackout")
        console.shared.command("control", "class", "pig")
        console.shared.watch(+1)
        for i in range(60):  # two seconds watched: at most one picture a second
            controls = console.turn(now + 1 + i / 30, controls, ShowState(), plan_for(), [], display)
        assert controls.blackout and controls.forced_label == "pig"
        assert 1 <= display.reads <= 2
        deadline = time.monotonic() + 5
        while console.shared.picture is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert console.shared.picture[1][:2] == b"\xff\xd8"
        # the stream, over a real socket: what a browser gets; a page showing the picture is one more watcher
        wait_until(lambda: console.web.server.started, "the console's server")
        before = console.shared.watchers
        with httpx.stream("GET", console.address + "api/stream?picture=1", timeout=10) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            line = next(line for line in answer.iter_lines() if line.startswith("data: "))
            assert '"mode": "performance"' in line
            assert json.loads(line[6:])["watchers"] == before + 1, "the stream counted as a watcher"
        wait_until(lambda: console.shared.watchers == before, "the closed stream no longer counted")
    finally:
        console.stop()
    assert not console.web.thread.is_alive()


def test_a_test_sound_plays_into_the_ring_in_place_of_the_source():
    from app.capture import RingBuffer
    from app.console import SteerableSource
    from app.supervise import RecordingPlayer
    from common.paths import DEMO_AUDIO

    ring, inner = RingBuffer(), FakeSource()
    source = SteerableSource(inner, ring)
    source.play_test(DEMO_AUDIO / "cow.mp3")
    assert inner.stops == 1
    wait = time.monotonic() + 5
    while ring.written == 0 and time.monotonic() < wait:
        time.sleep(0.01)
    assert ring.written > 0, "the test sound reaches the ring"
    source.poll(0.0, True)
    assert inner.polls == 0, "the microphone waits while the test sound plays"
    source.test.stop()
    source.poll(0.0, True)
    assert inner.polls == 1 and source.test is None
    # a recording set aside starts again from its beginning
    player = RecordingPlayer(ring, DEMO_AUDIO / "dog.mp3", 0.0)
    source = SteerableSource(player, ring)
    source.play_test(DEMO_AUDIO / "cow.mp3")
    source.test.stop()
    source.poll(1.0, False)
    assert isinstance(source.source, RecordingPlayer) and source.source is not player
    source.stop()
