"""Teaching a sound from the console, timed in the running app: Save (the library stores it, in a child process), and
from Save to the sound named by the running server.

The app runs headless at the venue's defaults on the bundled recordings after a quiet room (as
tests/test_console_browser.py runs it), its console on and its taught sounds in a folder of their own. Each round
teaches a new name from three takes made through the console's API as its page makes them: Record, the count, then a
bundled recording (the cow) played into the show's ring by the console's test sound; a bundled seed picture; Save.
Then the cow is played again (every 7 s until it is named) and the state is read every 50 ms until the server's
label is the new name. The name is forgotten before the next round.

    python benchmarks/console_teach_bench.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Console:
    def __init__(self, url: str):
        self.url = url
        self.token = self.get("api/session")["token"]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.load(answer)

    def post(self, path: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Origin": self.url.rstrip("/"), "X-CSRF-Token": self.token})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


def take(console: Console, sound: str) -> float:
    """One take as the page makes it; the seconds from Record to the take listed."""
    console.post("api/test-sound", {"sound": "sheep"})  # ends any test sound: the show's own starts at its quiet room
    answer = {}
    started = time.monotonic()
    recording = threading.Thread(target=lambda: answer.update(zip(("status", "body"), console.post(
        "api/teach/record", {}))))
    recording.start()
    while (console.get("api/state").get("take") or {}).get("state") != "waiting":
        time.sleep(0.05)
    console.post("api/test-sound", {"sound": sound})
    recording.join()
    if answer["status"] != 200:
        raise SystemExit(f"the take failed: {answer}")
    return time.monotonic() - started


def main() -> None:
    import soundfile

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    room = folder / "room"
    room.mkdir()
    soundfile.write(room / "0_quiet_room.wav",
                    (0.0005 * np.random.default_rng(0).standard_normal(160000)).astype(np.float32), 16000)
    for recording in (REPO / "app" / "demo_audio").glob("*.mp3"):
        shutil.copy(recording, room)
    port = free_port()
    venue = folder / "venue.toml"
    venue.write_text(f"console_port = {port}\ntaught_dir = \"{folder / 'taught'}\"\n")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--input", str(room),
                             "--config", str(venue)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=open(folder / "app.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 400
        while True:
            try:
                if Console(url).get("api/state").get("server", {}).get("alive"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the app did not start: " + (folder / "app.log").read_text()[-2000:])
            time.sleep(0.5)
        console = Console(url)
        rows = []
        for r in range(args.rounds):
            name = f"bessie{r}"
            takes = [take(console, "cow") for _ in range(3)]
            console.post("api/teach/seed", {"seed": "cow"})
            t0 = time.monotonic()
            status, body = console.post("api/teach/save", {"name": name})
            saved = time.monotonic()
            if status != 200:
                raise SystemExit(f"save failed: {body}")
            played = 0.0
            while console.get("api/state").get("heard", {}).get("label") != name:
                if time.monotonic() > played + 7.0:
                    console.post("api/test-sound", {"sound": "cow"})
                    played = time.monotonic()
                if time.monotonic() - saved > 60:
                    raise SystemExit(f"{name} was not named within 60 s")
                time.sleep(0.05)
            named = time.monotonic()
            rows.append({"take_s": round(statistics.median(takes), 2), "save_s": round(saved - t0, 2),
                         "save_to_named_s": round(named - saved, 2), "play_to_named_s": round(named - played, 2)})
            print(json.dumps(rows[-1]), flush=True)
            console.post("api/teach/forget", {"name": name})
            time.sleep(3.0)  # the ear lets it go before the next round
        print(json.dumps({k: statistics.median(row[k] for row in rows) for k in rows[0]}))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
