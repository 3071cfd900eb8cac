"""A venue on one machine, with real processes: headless kiosks share two servers, one server is killed (SIGKILL;
or stopped, HEAR_AND_SEE_VENUE_SIGNAL=SIGSTOP: silent as in a power cut) and started again. Every kiosk it heard is taken over by the other within 2 s (and shows its live frames again within
2 s in the heavy tests: that part is the dream's speed on a shared CPU), with no black frame, its dream going on from
the picture on screen; no kiosk ever shows another's classes; a server that comes back takes new kiosks and
leaves the others where they are. The always-run test has 2 kiosks; 6 kiosks and a 10-minute soak (a server killed
every minute) are heavy. Loopback only; every wait has a deadline."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import zmq
from PIL import Image

from app.client import free_tcp_address
from common import protocol
from tests.conftest import REPO_ROOT, wait_until

TAKE_OVER_S = 2.0   # from the kill to the kiosk's first live frame dreamt by another server
# The servers dream whatever they hear, however faintly (the gate's own tests are elsewhere): a kiosk always has a
# live dream, so a gap in its live frames is the failover's alone. Small dreams: 2 servers and 6 kiosks share 2 cores.
SERVER_VENUE = "min_confidence = 0.0\nsilence_dbfs = -90.0\nfloor_margin_db = 0.0\ndream_size = 64\n"
# Different class sets and recordings per kiosk: a session mixed with another would show a class not in its set.
KIOSKS = [("dog.mp3", ["dog", "cat"]), ("rooster.mp3", ["rooster", "hen"]), ("pig.mp3", ["pig", "cow"]),
          ("frog.mp3", ["frog", "crickets"]), ("cow.mp3", ["cow", "sheep"]), ("cat.mp3", ["cat", "crow"])]


def serving(address: str) -> bool:
    """A ping answered: a load probe, which opens no session (it would count as a kiosk there)."""
    context = zmq.Context.instance()
    with context.socket(zmq.DEALER) as probe:
        probe.setsockopt(zmq.LINGER, 0)
        probe.connect(address)
        probe.send_multipart(protocol.encode(protocol.PING, t=time.time()))
        return bool(probe.poll(1500))


@dataclass
class Kiosk:
    name: str
    classes: list[str]
    process: subprocess.Popen
    frame_log: Path
    live_dir: Path
    log_path: Path

    def rows(self) -> list[dict]:
        if not self.frame_log.exists():
            return []
        lines = self.frame_log.read_text().splitlines()
        return list(csv.DictReader(lines[:-1], delimiter="\t"))  # the last line may be half-written

    def keyframes(self) -> list[tuple[float, Path, str]]:
        """Every live keyframe shown, as (wall-clock time, its picture, its class): a picture is named by the same
        seconds as its frame-log row, and that row has the time."""
        rows = {r["seconds"]: r for r in self.rows()}
        found = []
        for picture in self.live_dir.glob("*.png") if self.live_dir.exists() else ():
            row = rows.get(f"{float(picture.stem):.3f}")
            if row is not None:
                found.append((float(row["unix_time"]), picture, row["class"]))
        return sorted(found)

    def live_since(self, unix_time: float) -> list[tuple[float, Path, str]]:
        return [k for k in self.keyframes() if k[0] > unix_time]

    def servers_used(self) -> list[str]:
        return [address for _, address in self.choices()]

    def choices(self) -> list[tuple[float, str]]:
        """(wall-clock time, server) each time the kiosk chose a server, from its log."""
        found = re.findall(r"^(\S+ \S+) \S+ INFO heard and dreamt by (\S+)", self.log_path.read_text(), re.M)
        return [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp(), address) for t, address in found]

    def live_from_another(self, killed: float) -> list[tuple[float, Path, str]]:
        """Live keyframes since the kiosk chose another server after `killed` (a frame in flight at the kill, from
        the lost server, does not count)."""
        chosen = [t for t, _ in self.choices() if t > killed]
        return self.live_since(chosen[0]) if chosen else []


class Venue:
    def __init__(self, root: Path):
        self.root = root
        self.addresses = [free_tcp_address(), free_tcp_address()]
        self.servers: dict[str, subprocess.Popen] = {}
        self.silent: dict[str, subprocess.Popen] = {}  # killed or stopped, until started again
        self.kiosks: list[Kiosk] = []
        (root / "server.toml").write_text(SERVER_VENUE)

    def start_server(self, address: str, *flags: str) -> Path:
        if address in self.silent:
            stopped = self.silent.pop(address)
            stopped.kill()
            stopped.wait(timeout=10)
        log_path = self.root / f"server-{address.rsplit(':', 1)[1]}.log"
        self.servers[address] = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--bind", address, "--config", str(self.root / "server.toml"),
             "--threads", "1", *flags], cwd=REPO_ROOT, stdout=open(log_path, "a"), stderr=subprocess.STDOUT)
        return log_path

    def start(self, kiosks: int, live_frames: int) -> None:
        """Every server, then `kiosks` kiosks, each until it has shown `live_frames` live frames."""
        for address in self.addresses:
            self.start_server(address)
        self.wait_serving(*self.addresses)
        for n in range(kiosks):
            self.start_kiosk(n)
        for kiosk in self.kiosks:
            wait_until(f"{kiosk.name}'s first live frames", lambda: len(kiosk.live_since(0)) >= live_frames,
                       timeout=120, interval=0.2)

    def wait_serving(self, *addresses: str, timeout: float = 120) -> None:
        for address in addresses:
            wait_until(f"a server at {address}", lambda: serving(address), timeout=timeout, interval=0.5)

    def start_kiosk(self, n: int, *flags: str) -> Kiosk:
        """Kiosk n, with every server's address unless `flags` say where its servers are."""
        recording, classes = KIOSKS[n % len(KIOSKS)]
        name = f"kiosk{n}"
        venue = self.root / f"{name}.toml"
        venue.write_text(f"classes = {classes!r}\nwidth = 256\nheight = 144\n".replace("'", '"'))
        out = self.root / name
        log = self.root / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", "--headless", "--config", str(venue),
             *(flags or ("--server", *self.addresses)),
             "--input", str(REPO_ROOT / "app/demo_audio" / recording), "--frame-log", str(self.root / f"{name}.tsv"),
             "--output", str(out)], cwd=REPO_ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        kiosk = Kiosk(name, classes, process, self.root / f"{name}.tsv", out / "live", log)
        self.kiosks.append(kiosk)
        return kiosk

    def serving_kiosks(self, address: str) -> list[Kiosk]:
        return [k for k in self.kiosks if k.servers_used()[-1:] == [address]]

    def kill(self, address: str) -> float:
        """SIGKILL: the process ends and its connections close, which kiosks hear at once. With
        HEAR_AND_SEE_VENUE_SIGNAL=SIGSTOP the server falls silent instead, as in a power cut or a pulled cable, and
        only the heartbeat's timeout tells; it is killed when it is started again."""
        server = self.servers.pop(address)
        server.send_signal(getattr(signal, os.environ.get("HEAR_AND_SEE_VENUE_SIGNAL", "SIGKILL")))
        killed = time.time()
        self.silent[address] = server
        return killed

    def close(self) -> None:
        for kiosk in self.kiosks:
            if kiosk.process.poll() is None:
                kiosk.process.terminate()
        for kiosk in self.kiosks:
            try:
                kiosk.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kiosk.process.kill()
        for server in self.silent.values():
            server.kill()
            server.wait(timeout=10)
        for server in self.servers.values():
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture
def venue(tmp_path):
    v = Venue(tmp_path)
    yield v
    v.close()


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two pictures' luminance at 48x27: 1 the same picture, ~0 unrelated ones."""
    def gray(image):
        return np.asarray(Image.fromarray(image).convert("L").resize((48, 27), Image.BILINEAR), dtype=np.float64).ravel()
    x, y = gray(a), gray(b)
    return float(np.corrcoef(x, y)[0, 1])


def seed_picture(label: str, shape: tuple[int, int]) -> np.ndarray:
    """The seed image as a dream starts from it at this size (fitted whole, the bands filled)."""
    from models.dream import _to_tensor, to_uint8
    from models.seeds import load_seed_image, seed_image_path

    return to_uint8(_to_tensor(load_seed_image(seed_image_path(label)), shape, "cpu"))


def take_over(kiosk: Kiosk, killed: float) -> dict:
    """How kiosk went on after its server was killed: seconds to its first live keyframe from another server, and
    that picture's similarity to the last live keyframe before the kill and to its class's seed image."""
    last = [k for k in kiosk.keyframes() if k[0] <= killed][-1]
    first = kiosk.live_from_another(killed)[0]
    picture = np.asarray(Image.open(first[1]).convert("RGB"))
    switched = next(t for t, _ in kiosk.choices() if t > killed)
    return {"seconds": first[0] - killed, "switched": switched - killed,
            "to_last": similarity(picture, np.asarray(Image.open(last[1]).convert("RGB"))),
            "to_seed": similarity(picture, seed_picture(first[2], picture.shape[:2]))}


def failover(venue: Venue, kiosks: int, live_in_time: bool) -> None:
    """`live_in_time`: a new live frame within TAKE_OVER_S of the kill is asserted too, not only the move to another
    server: that one is the dream's speed on a machine that is also running everything else (heavy tests only)."""
    venue.start(kiosks, live_frames=3)
    # Kill the server that hears the most kiosks
    lost = max(venue.addresses, key=lambda a: len(venue.serving_kiosks(a)))
    moved = venue.serving_kiosks(lost)
    killed = venue.kill(lost)
    for kiosk in moved:
        wait_until(f"{kiosk.name} live again", lambda: kiosk.live_from_another(killed), timeout=20, interval=0.2)
    time.sleep(1.0)  # the PNG writer's last pictures
    figures = [take_over(kiosk, killed) for kiosk in moved]
    print(f"\n{kiosks} kiosks, {len(moved)} on the killed server:")
    for kiosk, f in zip(moved, figures):
        print(f"  {kiosk.name}: with another server after {f['switched']:.2f} s, live again after {f['seconds']:.2f} s; "
              f"similarity of its first new frame to the last before the kill {f['to_last']:.3f}, to the seed "
              f"{f['to_seed']:.3f}")
    # The lost server comes back: a new kiosk uses it, the others stay where they are
    venue.start_server(lost)
    venue.wait_serving(lost)
    placed = {k.name: k.servers_used()[-1] for k in venue.kiosks}
    newcomer = venue.start_kiosk(kiosks)
    wait_until("the new kiosk to choose a server", newcomer.servers_used, timeout=60, interval=0.2)
    assert newcomer.servers_used()[0] == lost  # the least loaded: the one that came back
    assert {k.name: k.servers_used()[-1] for k in venue.kiosks if k is not newcomer} == placed  # nobody moved
    for kiosk in venue.kiosks[:kiosks]:
        assert kiosk.process.poll() is None, kiosk.log_path.read_text()[-2000:]
        check_screen(kiosk)
    for kiosk, f in zip(moved, figures):
        assert f["switched"] <= TAKE_OVER_S, (kiosk.name, f)
        assert f["seconds"] <= TAKE_OVER_S or not live_in_time, (kiosk.name, f)
        assert f["to_last"] > f["to_seed"], (kiosk.name, f)  # the dream went on from the screen, not the seed


def check_screen(kiosk: Kiosk) -> None:
    """Never black, and only ever its own classes."""
    rows = kiosk.rows()
    assert rows
    assert all(r["source"] != "blackout" and float(r["mean_luminance"]) >= 5 for r in rows), kiosk.name
    assert {r["class"] for r in rows} <= {*kiosk.classes, "-"}, (kiosk.name, {r["class"] for r in rows})


def test_a_lost_server_kiosks_go_on_with_the_other(venue):
    failover(venue, kiosks=2, live_in_time=False)


def test_a_kiosk_finds_an_advertised_server_and_drops_it_when_it_goes(venue):
    """DNS-SD on this machine's network: a server with keys advertises itself, a kiosk that lists "mdns" and knows the
    key finds it and dreams with it, and drops it at its goodbye when it is stopped (systemctl's SIGTERM). Other
    servers on the network (another venue, another test) carry another key or none, so this kiosk takes none of them."""
    keys = venue.root / "keys"
    subprocess.run([sys.executable, "-m", "app.cli", "keys", str(keys)], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=60)
    address = venue.addresses[0]
    server_log = venue.start_server(address, "--server-secret-key", str(keys / "server.key_secret"), "--advertise")
    kiosk = venue.start_kiosk(0, "--server", "mdns", "--server-key", str(keys / "server.key"))
    wait_until("the kiosk's live frames from the advertised server", lambda: len(kiosk.live_since(0)) >= 2,
               timeout=120, interval=0.2)
    assert kiosk.servers_used() == [address]
    assert "advertised as" in server_log.read_text()
    venue.servers.pop(address).terminate()
    wait_until("the kiosk to drop the server at its goodbye",
               lambda: f"server {address} is gone from the network" in kiosk.log_path.read_text(), timeout=30)
    assert kiosk.process.poll() is None, kiosk.log_path.read_text()[-2000:]
    check_screen(kiosk)


@pytest.mark.heavy
def test_six_kiosks_two_servers_one_lost(venue):
    failover(venue, kiosks=int(os.environ.get("HEAR_AND_SEE_VENUE_KIOSKS", "6")), live_in_time=True)


@pytest.mark.heavy
def test_soak_a_server_killed_every_minute_loses_no_kiosk(venue):
    minutes = float(os.environ.get("HEAR_AND_SEE_SOAK_MINUTES", "10"))
    kiosks = int(os.environ.get("HEAR_AND_SEE_VENUE_KIOSKS", "4"))
    venue.start(kiosks, live_frames=1)
    started, kills, take_overs = time.monotonic(), 0, []
    while kills < minutes:  # a kill 40 s into each minute, so the last take-overs are watched within the soak
        time.sleep(max(0.0, started + 60 * kills + 40 - time.monotonic()))
        lost = max(venue.addresses, key=lambda a: len(venue.serving_kiosks(a)))
        moved = venue.serving_kiosks(lost)
        killed = venue.kill(lost)
        kills += 1
        for kiosk in moved:  # every take-over is counted, a slow one too, so the soak reports them all
            deadline = time.monotonic() + 20
            while not kiosk.live_from_another(killed) and time.monotonic() < deadline:
                time.sleep(0.2)
            first = kiosk.live_from_another(killed)
            take_overs.append(first[0][0] - killed if first else float("inf"))
            print(f"kill {kills}: {kiosk.name} live again after {take_overs[-1]:.2f} s", flush=True)
        venue.start_server(lost)
        venue.wait_serving(lost)
    worst = max(take_overs)
    print(f"\nsoak: {minutes:g} min, {kills} kills, {len(venue.kiosks)} kiosks, {len(take_overs)} take-overs: "
          f"median {np.median(take_overs):.2f} s, slowest {worst:.2f} s")
    for kiosk in venue.kiosks:
        assert kiosk.process.poll() is None, kiosk.log_path.read_text()[-2000:]
        assert kiosk.live_since(time.time() - 30), kiosk.name  # still dreaming at the end
        check_screen(kiosk)
    assert worst <= TAKE_OVER_S
