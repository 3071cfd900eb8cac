"""The console: a web page served by the running app to see the show, steer it and set the venue up.

Starlette (the ASGI toolkit under FastAPI) on uvicorn: small, well kept, with server-sent events, static files and
a test client built in, and nothing the show does not need (no ORM, no templating, no build step). It runs on a
thread of its own beside the show. The two sides meet in `Shared` alone: the loop publishes what it shows
(`Console.turn`, once per frame) and the web thread hands commands back through a bounded queue, which the loop
applies between frames, as it does OSC (app/controls.py): the loop owns the window, the microphone and the server.

The picture is read back from the display at most once a second and only while a page that shows it is open;
with nobody watching the console costs the loop one queue poll per frame (BENCHMARKS.md, "The console").

Who may use it: requests from this machine (loopback) need no password; any other needs the venue's password
(`console_password_hash`) and then a session cookie. Every state-changing request must come from the console's
own page (its Origin) and carry its token: another site open in the same browser cannot steer the show.

Teaching a sound: takes are cut from the loop's own ring (app/takes.py, as the command line cuts them) on a worker
thread, wait in a draft folder outside the taught sounds' folder, and are taught by the library in a child process:
this process checks names, takes and pictures with models/taught.py's rules, which need no torch, and never loads it.
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
import os
import queue
import secrets
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, replace
from datetime import datetime
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from app.config import RULES, ConfigError, Settings, check, save_setting
from app.controls import OSC_PREFIX, Bindings, ControlError, Controls, changed
from app.hours import is_open, parse_hours, scheduled_open
from app.passwords import check_password
from app.takes import COUNTDOWN_S, Draft, Take, TakeError, teach_in_child
from common.paths import DEMO_AUDIO
from models import taught
from models.seeds import SeedImageError, seed_classes, seed_image_path

log = logging.getLogger("hear_and_see.console")

PUBLISH_EVERY_S = 0.25       # the page's numbers update four times a second
PICTURE_EVERY_S = 1.0        # the live picture, while someone watches
PICTURE_WIDTH = 640          # enough for a phone or a corner of the office screen; a JPEG of ~40 kB
EVENTS_KEPT = 50
LOG_LINES_KEPT = 100
COMMAND_QUEUE_SIZE = 256     # a flood of requests is refused, not queued without end
MAX_BODY_BYTES = 64 * 1024
MAX_PICTURE_BYTES = 16 * 1024 * 1024   # a phone's photograph, with room to spare
PICTURE_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
THUMBNAIL_SIDE = 240
SESSION_SECONDS = 12 * 3600
LOGIN_FAILURES_ALLOWED = 5   # then the address waits LOGIN_LOCK_S before it may try again
LOGIN_LOCK_S = 60.0
MACHINE_EVERY_S = 2.0
STATIC = Path(__file__).with_name("console_static")
# What the page may steer, as the OSC address it stands for: one path for keys, OSC and the console.
CONTROLS = ("freeze", "blackout", "hud", "class", "intensity", "zoom", "layer")
# Settings the running show takes up at once; every other is saved and used from the next start.
LIVE_SETTINGS = {"hours", "show_hud", "zoom_rate"}
HIDDEN_SETTINGS = {"console_password_hash"}  # set by `hear-and-see console-password`, never through the page


def test_sounds() -> list[str]:
    return sorted(p.stem for p in DEMO_AUDIO.iterdir() if p.suffix == ".mp3")


class LogTail(logging.Handler):
    """Warnings and errors of the whole app, the newest LOG_LINES_KEPT, for the page."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: collections.deque = collections.deque(maxlen=LOG_LINES_KEPT)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append({"t": record.created, "level": record.levelname, "name": record.name,
                               "message": record.getMessage()})
        except Exception:  # a bad log call must not break the show
            self.handleError(record)


class Shared:
    """All the web thread and the loop share. The loop replaces `snapshot` and `picture` whole (an assignment is
    atomic in Python); commands go the other way through a bounded queue."""

    def __init__(self, settings: Settings, config_path: str | Path | None, bindings: Bindings,
                 local_server: bool, ring=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.settings, self.config_path, self.bindings = settings, config_path, bindings
        self.local_server = local_server
        self.ring = ring               # the loop's microphone ring: takes are cut from it
        self.draft = Draft()           # the sound being taught
        self.snapshot: dict = {"running": True}
        self.picture: tuple[int, bytes] | None = None  # (number, JPEG)
        self.watchers = 0
        self._watchers_lock = threading.Lock()
        self.commands: queue.Queue = queue.Queue(COMMAND_QUEUE_SIZE)
        self.log_tail = LogTail()
        self.drawing_at = 0.0          # monotonic time of the last frame drawn
        self.server_alive = False
        self.registry = CollectorRegistry()
        self.metrics = dict(
            fps=Gauge("hear_and_see_fps", "frames drawn per second, over the last second", registry=self.registry),
            keyframes=Gauge("hear_and_see_live_keyframes_per_second", "live dream keyframes shown per second",
                            registry=self.registry),
            round_trip=Gauge("hear_and_see_server_round_trip_seconds", "the last heartbeat's round trip",
                             registry=self.registry),
            server_up=Gauge("hear_and_see_server_up", "1 while the inference server answers", registry=self.registry),
            open=Gauge("hear_and_see_open", "1 while open (opening hours)", registry=self.registry),
            events=Counter("hear_and_see_events", "sounds heard, by class", ["label"], registry=self.registry),
            restarts=Gauge("hear_and_see_server_restarts", "times the local server was started again",
                           registry=self.registry),
            reconnects=Gauge("hear_and_see_server_reconnects", "times the client reconnected to the server",
                             registry=self.registry),
        )

    def watch(self, delta: int) -> None:
        with self._watchers_lock:
            self.watchers += delta

    def command(self, *command) -> bool:
        try:
            self.commands.put_nowait(command)
            return True
        except queue.Full:
            return False


def mic_dbfs(ring, seconds: float = 0.1) -> float:
    """The level of the newest `seconds` in the ring, dBFS (-100 for silence)."""
    from app.capture import SAMPLE_RATE

    newest = ring.latest()[-int(seconds * SAMPLE_RATE):]
    rms = float(np.sqrt(np.mean(np.square(newest, dtype=np.float64)))) if newest.size else 0.0
    return max(-100.0, 20 * np.log10(rms)) if rms > 0 else -100.0


def thumbnail(path: Path) -> bytes:
    """A picture as a small JPEG for the page (transparency laid on white, as the dream sees it)."""
    with Image.open(path) as image:
        image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # a JPEG decodes at a fraction of its size
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
        out = BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


def jpeg(pixels: np.ndarray) -> bytes:
    """About PICTURE_WIDTH wide. Image.reduce (a box filter by a whole factor) costs 4 ms of CPU a picture here
    where resize cost 11: the CPU the show shares."""
    image = Image.fromarray(pixels)
    factor = max(1, round(image.width / PICTURE_WIDTH))
    out = BytesIO()
    (image.reduce(factor) if factor > 1 else image).save(out, "JPEG", quality=75)
    return out.getvalue()


class SteerableSource:
    """The loop's sound source, which the console may close (outside opening hours) or set aside while a test
    sound plays through the whole loop. A recording set aside starts again from its beginning."""

    def __init__(self, source, ring):
        self.source, self.ring = source, ring
        self.test = None
        self.closed = False

    def play_test(self, path: Path) -> None:
        from app.capture import FileSource

        self.source.stop()
        if self.test is not None:
            self.test.stop()
        self.test = FileSource(self.ring, path, loop=False).start()

    def poll(self, now: float, server_ready: bool) -> None:
        if self.test is not None:
            if self.test.alive:
                return
            self.test = None
            self._resume(now)
        if not self.closed:
            self.source.poll(now, server_ready)

    def close(self, closed: bool, now: float) -> None:
        if closed and not self.closed:
            self.source.stop()
        elif self.closed and not closed:
            self._resume(now)
        self.closed = closed

    def _resume(self, now: float) -> None:
        from app.supervise import RecordingPlayer

        if isinstance(self.source, RecordingPlayer):
            self.source = RecordingPlayer(self.ring, self.source.path, now)

    def stop(self) -> None:
        if self.test is not None:
            self.test.stop()
        self.source.stop()


class Console:
    """What the loop calls: `source` once, `open` before it sends a window, `turn` once per frame. Opening hours
    are kept here with or without the web page (console_port 0 starts no web server)."""

    def __init__(self, settings: Settings, config_path: str | Path | None, bindings: Bindings, client, server, ring,
                 source, started: float):
        self.client, self.server, self.ring, self.started = client, server, ring, started
        self.source = SteerableSource(source, ring)
        self.shared = Shared(settings, config_path, bindings, local_server=server is not None, ring=ring)
        self.openings = parse_hours(settings.hours)
        self.open_override = False
        self.open = True
        self.blackout_before_closing = False
        self._next_publish = self._next_picture = self._next_hours = 0.0
        self._frames: collections.deque = collections.deque()       # draw times over the last second
        self._keyframes: collections.deque = collections.deque()
        self._last_keyframe = None
        self._heard = None
        self._events: collections.deque = collections.deque(maxlen=EVENTS_KEPT)
        self._encoder = None
        self.web = None
        if settings.console_port:
            logging.getLogger().addHandler(self.shared.log_tail)
            self.web = WebServer(build_app(self.shared), settings.console_host, settings.console_port).start()

    @property
    def address(self) -> str | None:
        return self.web.url if self.web else None

    def turn(self, now: float, controls: Controls, show, plan, results, display) -> Controls:
        """After drawing, before the swap (the back buffer is this turn's picture). Returns the controls the
        console's commands changed; they take effect from the next turn."""
        if now >= self._next_hours:
            self._next_hours = now + 1.0
            controls = self._keep_hours(now, controls)
        self._count(now, plan)
        for r in results:
            if r.label is not None and r.label != self._heard:
                self._events.appendleft({"t": time.time(), "label": r.label, "confidence": round(r.confidence, 3)})
                self.shared.metrics["events"].labels(r.label).inc()
            self._heard = r.label
            self._last_result = r
        if self.web is None:
            return controls
        controls = self._apply_commands(controls, now)
        self.shared.drawing_at, self.shared.server_alive = now, self.client.alive
        if self.shared.watchers and now >= self._next_picture:
            self._next_picture = now + PICTURE_EVERY_S
            self._encode(display.read_pixels())
        if now >= self._next_publish:
            self._next_publish = now + PUBLISH_EVERY_S
            self.shared.snapshot = self._snapshot(now, controls, show, plan)
        return controls

    def _keep_hours(self, now: float, controls: Controls) -> Controls:
        wall = datetime.now()
        if self.open_override and scheduled_open(self.openings, wall):
            self.open_override = False  # the schedule has caught up: tonight it closes again
        was_open, self.open = self.open, is_open(self.openings, wall, self.open_override)
        if was_open != self.open:
            log.warning("%s (opening hours %r)", "open" if self.open else "closed", self.shared.settings.hours)
            self.source.close(not self.open, now)
            if not self.open:
                self.blackout_before_closing = controls.blackout
                return replace(controls, blackout=True, forced_label=None)
            return replace(controls, blackout=self.blackout_before_closing)
        return controls

    def _count(self, now: float, plan) -> None:
        self._frames.append(now)
        while self._frames[0] < now - 1.0:
            self._frames.popleft()
        if plan.frame is not None and plan.frame.id != self._last_keyframe:
            self._last_keyframe = plan.frame.id
            self._keyframes.append(now)
        while self._keyframes and self._keyframes[0] < now - 1.0:
            self._keyframes.popleft()

    def _encode(self, pixels: np.ndarray) -> None:
        """JPEG on a thread of its own: the loop only copies the pixels out."""
        from concurrent.futures import ThreadPoolExecutor

        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-jpeg")
        number = (self.shared.picture[0] if self.shared.picture else 0) + 1

        def encode():
            self.shared.picture = (number, jpeg(pixels))
        self._encoder.submit(encode)

    def _apply_commands(self, controls: Controls, now: float) -> Controls:
        before = controls
        while True:
            try:
                kind, *args = self.shared.commands.get_nowait()
            except queue.Empty:
                break
            try:
                if kind == "control":
                    controls = self.shared.bindings.on_osc(controls, OSC_PREFIX + args[0], tuple(args[1:]))
                elif kind == "open_now":
                    self.open_override = bool(args[0])
                    self._next_hours = now
                elif kind == "restart_server" and self.server is not None:
                    log.warning("the console restarts the server")
                    self.server.process.terminate()  # the supervisor starts it again, and counts it
                elif kind == "test_sound":
                    log.info("the console plays the test sound %s", args[0].name)
                    self.source.play_test(args[0])
                elif kind == "setting":
                    controls = self._apply_setting(controls, *args)
            except (ControlError, OSError) as exc:
                log.warning("the console's %s failed: %s", kind, exc)
        if controls != before:
            log.info("controls from the console: %s", changed(before, controls))
        return controls

    def _apply_setting(self, controls: Controls, key: str, value) -> Controls:
        self.shared.settings = replace(self.shared.settings, **{key: value})
        if key == "hours":
            self.openings = parse_hours(value)
            self._next_hours = 0.0
        elif key == "show_hud":
            controls = replace(controls, hud=value)
        elif key == "zoom_rate":
            controls = replace(controls, zoom=value)
        return controls

    def _snapshot(self, now: float, controls: Controls, show, plan) -> dict:
        shared, client, result = self.shared, self.client, getattr(self, "_last_result", None)
        fps, keyframes = len(self._frames), len(self._keyframes)
        m = shared.metrics
        m["fps"].set(fps)
        m["keyframes"].set(keyframes)
        m["server_up"].set(1 if client.alive else 0)
        m["open"].set(1 if self.open else 0)
        m["reconnects"].set(client.reconnects)
        if client.round_trip_ms is not None:
            m["round_trip"].set(client.round_trip_ms / 1000)
        if self.server is not None:
            m["restarts"].set(self.server.restarts)
        return {
            "running": True, "mode": shared.settings.mode, "uptime_s": round(now - self.started, 1),
            "open": self.open, "open_override": self.open_override, "hours": shared.settings.hours,
            "state": plan.scene.state, "status": plan.scene.status, "on_screen": plan.scene.label,
            "heard": {"label": show.heard, "confidence": round(show.confidence, 3),
                      "top": [[n, round(p, 3)] for n, p in show.top][:5],
                      "tags": [[n, round(p, 3)] for n, p in (result.tags if result else ())]},
            "events": list(self._events),
            "mic_dbfs": round(mic_dbfs(self.ring), 1),
            "fps": fps, "keyframes_per_s": keyframes,
            "server": {"alive": client.alive, "address": client.address, "local": self.server is not None,
                       "round_trip_ms": None if client.round_trip_ms is None else round(client.round_trip_ms, 1),
                       "restarts": self.server.restarts if self.server else 0, "reconnects": client.reconnects},
            "controls": {k: v for k, v in asdict(controls).items() if k != "quit"},
            "classes": list(shared.bindings.classes),
            "test_sounds": test_sounds(),
            "picture": shared.picture[0] if shared.picture else 0,
            "log": list(shared.log_tail.lines)[-20:],
        }

    def stop(self) -> None:
        self.source.stop()
        if self.web is not None:
            self.web.stop()
            logging.getLogger().removeHandler(self.shared.log_tail)
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
        self.shared.draft.close()


class WebServer:
    """uvicorn on a thread of the app (uvicorn installs no signal handlers off the main thread)."""

    def __init__(self, app, host: str, port: int):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.host, self.port = host, port
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "WebServer":
        self.thread.start()
        deadline = time.monotonic() + 5.0
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:  # a taken port: the show goes on without its console
            log.error("no console: cannot listen on %s", self.url)
        else:
            log.info("console on %s", self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=3.0)


# --- the web side ---------------------------------------------------------------------------------------------

def machine() -> dict:
    import psutil

    memory, disk = psutil.virtual_memory(), psutil.disk_usage("/")
    info = {"cpu_percent": psutil.cpu_percent(interval=None), "memory_percent": memory.percent,
            "memory_used_gb": round(memory.used / 2 ** 30, 1), "memory_total_gb": round(memory.total / 2 ** 30, 1),
            "disk_percent": disk.percent, "disk_free_gb": round(disk.free / 2 ** 30, 1)}
    if shutil.which("nvidia-smi"):  # the app process does not load torch: ask the driver's own tool
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,utilization.gpu,memory.used,memory.total",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=2)
            name, util, used, total = [x.strip() for x in out.stdout.splitlines()[0].split(",")]
            info["gpu"] = {"name": name, "percent": float(util), "memory_used_mb": float(used),
                           "memory_total_mb": float(total)}
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    return info


def _is_loopback(host: str | None) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except (ValueError, TypeError):
        return False


def is_local(request) -> bool:
    """From this machine, and asked for by address: a page of another site whose name was pointed at 127.0.0.1
    (DNS rebinding) names its own host, and is treated as a stranger that must log in."""
    name = (urlparse("//" + request.headers.get("host", "")).hostname or "").strip("[]")
    try:
        by_address = name == "localhost" or bool(ipaddress.ip_address(name))
    except ValueError:
        by_address = False
    return by_address and _is_loopback(request.client.host if request.client else None)


class Guard:
    """Sessions, tokens against cross-site requests, and login throttling."""

    def __init__(self, password_hash: str | None):
        self.password_hash = password_hash
        self.local_token = secrets.token_urlsafe(32)   # for pages opened on this machine
        self.sessions: dict[str, tuple[float, str]] = {}  # cookie -> (expiry, token)
        self.failures: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def session(self, request) -> tuple[float, str] | None:
        cookie = request.cookies.get("console_session", "")
        with self.lock:
            found = self.sessions.get(cookie)
            if found and found[0] < time.time():
                del self.sessions[cookie]
                found = None
        return found

    def allowed(self, request) -> bool:
        return is_local(request) or self.session(request) is not None

    def token(self, request) -> str | None:
        if is_local(request):
            return self.local_token
        found = self.session(request)
        return found[1] if found else None

    def locked_for(self, address: str) -> float:
        with self.lock:
            recent = [t for t in self.failures.get(address, []) if t > time.monotonic() - LOGIN_LOCK_S]
            self.failures[address] = recent
            return LOGIN_LOCK_S - (time.monotonic() - recent[0]) if len(recent) >= LOGIN_FAILURES_ALLOWED else 0.0

    def login(self, address: str, password: str) -> str | None:
        if self.password_hash and check_password(password, self.password_hash):
            cookie = secrets.token_urlsafe(32)
            with self.lock:
                self.failures.pop(address, None)
                self.sessions[cookie] = (time.time() + SESSION_SECONDS, secrets.token_urlsafe(32))
            return cookie
        with self.lock:
            self.failures.setdefault(address, []).append(time.monotonic())
        return None

    def logout(self, request) -> None:
        with self.lock:
            self.sessions.pop(request.cookies.get("console_session", ""), None)


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


def same_origin(request) -> bool:
    """A browser names the page a request comes from; only the console's own may change anything."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not origin or not host:
        return False
    url = urlparse(origin)
    return url.scheme in ("http", "https") and url.netloc == host


async def body_of(request, limit: int, too_large: str) -> bytes:
    """The request's body, refused (413, `too_large`) as soon as it is known to be over `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Refused(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, too_large)
    return bytes(body)


async def json_body(request) -> dict:
    body = await body_of(request, MAX_BODY_BYTES, f"the request is larger than {MAX_BODY_BYTES // 1024} kB")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the request's body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "the request's body must be a JSON object")
    return data


def build_app(shared: Shared):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    guard = Guard(shared.settings.console_password_hash)
    machine_cache: dict = {"at": 0.0, "info": {}}

    def handler(method, *, login: bool = True, change: bool = False, own_page: bool = False):
        """Every endpoint through one door: who may ask, whether it may change anything (only from the console's
        own page, `own_page`, and with its token), and a 4xx that says why for any bad request."""
        async def endpoint(request):
            try:
                if login and not guard.allowed(request):
                    raise Refused(401, "log in first")
                if (change or own_page) and not same_origin(request):
                    raise Refused(403, "refused: the request does not come from the console's own page")
                if change:
                    token = guard.token(request)
                    if token is None or not secrets.compare_digest(request.headers.get("x-csrf-token", ""), token):
                        raise Refused(403, "refused: the request lacks the console's token; reload the page")
                return await method(request)
            except Refused as exc:
                return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)
        return endpoint

    async def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def session(request):
        token = guard.token(request)
        return JSONResponse({"logged_in": token is not None, "token": token,
                             "password_set": bool(guard.password_hash)}, headers={"Cache-Control": "no-store"})

    async def login(request):
        address = request.client.host if request.client else "?"
        wait = guard.locked_for(address)
        if wait > 0:
            raise Refused(429, f"too many wrong passwords: try again in {wait:.0f} s",
                          {"Retry-After": str(int(wait) + 1)})
        password = (await json_body(request)).get("password")
        if not isinstance(password, str) or not password:
            raise Refused(400, "give the password")
        cookie = await asyncio.to_thread(guard.login, address, password)  # scrypt takes a while: not on the loop
        if cookie is None:
            raise Refused(401, "wrong password")
        response = JSONResponse({"logged_in": True})
        response.set_cookie("console_session", cookie, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(request):
        guard.logout(request)
        response = JSONResponse({"logged_in": False})
        response.delete_cookie("console_session")
        return response

    def state() -> dict:
        now = time.monotonic()
        if now - machine_cache["at"] >= MACHINE_EVERY_S:
            machine_cache.update(at=now, info=machine())
        return {**shared.snapshot, "machine": machine_cache["info"], "watchers": shared.watchers,
                "take": shared.draft.progress()}

    async def status(request):
        return JSONResponse(state(), headers={"Cache-Control": "no-store"})

    async def stream(request):
        """Server-sent events: the state four times a second. `?picture=1`: this page shows the live picture,
        which is only read back from the screen while one does."""
        watching = request.query_params.get("picture") == "1"

        async def events():
            if watching:
                shared.watch(+1)
            try:
                while True:  # until the page goes: Starlette then stops this generator, and `finally` runs
                    yield f"data: {json.dumps(state())}\n\n"
                    await asyncio.sleep(PUBLISH_EVERY_S)
            finally:
                if watching:
                    shared.watch(-1)
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def picture(request):
        if shared.picture is None:
            raise Refused(404, "no picture yet: it is read from the screen while a page shows it")
        return Response(shared.picture[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def queue_command(*command) -> JSONResponse:
        if not shared.command(*command):
            raise Refused(503, "the show is busy: try again")
        return JSONResponse({"ok": True}, 202)

    async def control(request):
        body = await json_body(request)
        name, value = body.get("control"), body.get("value")
        if name not in CONTROLS:
            raise Refused(400, f"control {name!r} is not one of {', '.join(CONTROLS)}")
        args = () if value is None else (value,)
        if not isinstance(value, (type(None), bool, int, float, str)):
            raise Refused(400, f"{name}: takes a number, true/false or a name, got {value!r}")
        try:  # the same pure rule the loop applies, tried here so that a bad value is the asker's 400
            shared.bindings.on_osc(Controls(zoom=shared.settings.zoom_rate), OSC_PREFIX + name, args)
        except (ControlError, IndexError, TypeError, ValueError) as exc:
            raise Refused(400, str(exc)) from None
        return queue_command("control", name, *args)

    async def open_now(request):
        value = (await json_body(request)).get("open")
        if not isinstance(value, bool):
            raise Refused(400, "open: takes true or false")
        return queue_command("open_now", value)

    async def restart_server(request):
        if not shared.local_server:
            raise Refused(409, "the server runs on another machine: restart it there")
        return queue_command("restart_server")

    async def test_sound(request):
        name = (await json_body(request)).get("sound")
        if name not in test_sounds():
            raise Refused(400, f"sound {name!r} is not one of {', '.join(test_sounds())}")
        return queue_command("test_sound", DEMO_AUDIO / f"{name}.mp3")

    async def settings(request):
        current = shared.settings
        return JSONResponse({
            "file": str(shared.config_path) if shared.config_path else None,
            "settings": [{"key": key, "value": _jsonable(getattr(current, key)), "takes": rule.takes,
                          "live": key in LIVE_SETTINGS} for key, rule in RULES.items() if key not in HIDDEN_SETTINGS]})

    async def set_setting(request):
        body = await json_body(request)
        key, value = body.get("key"), body.get("value")
        if key not in RULES or key in HIDDEN_SETTINGS:
            raise Refused(400, f"{key!r} is not a setting the console sets")
        if shared.config_path is None:
            raise Refused(409, "the show runs without a venue file (--config): there is nowhere to save it")
        try:
            value = check(key, value, "console")
        except ConfigError as exc:
            raise Refused(400, str(exc)) from None
        try:
            await asyncio.to_thread(save_setting, shared.config_path, key, value)
        except ConfigError as exc:
            raise Refused(400, str(exc)) from None
        log.warning("the console set %s = %r in %s", key, value, shared.config_path)
        if key in LIVE_SETTINGS:
            queue_command("setting", key, value)
        else:
            shared.settings = replace(shared.settings, **{key: value})
        return JSONResponse({"saved": True, "live": key in LIVE_SETTINGS}, 200)

    # --- teach: a sound of the venue's own, recorded from the show's microphone ------------------------------------
    draft = shared.draft
    builtins = sorted(taught.builtin_classes())
    seeds = seed_classes()

    def taught_root() -> Path:
        return Path(shared.settings.taught_dir)

    def draft_view() -> dict:
        picture = draft.picture
        return {"examples": [{k: e[k] for k in ("id", "seconds", "dbfs", "problem")} for e in draft.examples],
                "picture": None if picture is None else picture if picture.startswith(taught.SEED_PREFIX) else "upload"}

    def taught_view() -> list[dict]:
        return [{"name": s.name, "shows": s.shows, "as": s.as_, "examples": len(s.examples), "created": s.created}
                for s in taught.taught_sounds(taught_root())]

    async def teach_state(request):
        return JSONResponse({"taught": await asyncio.to_thread(taught_view), "draft": draft_view(), "seeds": seeds,
                             "builtins": builtins, "examples": [taught.MIN_EXAMPLES, taught.MAX_EXAMPLES],
                             "max_picture_mb": MAX_PICTURE_BYTES // 2 ** 20}, headers={"Cache-Control": "no-store"})

    def hold_draft():
        """One take, save or change of the draft at a time: a second is refused, not queued."""
        if not draft.lock.acquire(blocking=False):
            raise Refused(409, "busy: a take is being recorded or the sound saved; wait for it")

    async def record(request):
        if shared.ring is None:
            raise Refused(409, "this show has no microphone to record from")
        if not shared.snapshot.get("open", True):
            raise Refused(409, "closed (opening hours): the microphone is off; open now (Steer) to record")
        if len(draft.examples) >= taught.MAX_EXAMPLES:
            raise Refused(409, f"already {taught.MAX_EXAMPLES} examples, the most a sound takes: drop one first")
        hold_draft()
        try:
            draft.take = Take(shared.ring, countdown=COUNTDOWN_S)
            try:
                samples = await asyncio.to_thread(draft.take.run)
            except TakeError as exc:
                raise Refused(422, str(exc)) from None
            finally:
                draft.take = None
            try:  # the library's rule for an example, said now (clipped, silent, too short), not at Save
                taught.cut_to_sound(samples, "this take")
                problem = None
            except taught.TaughtError as exc:
                problem = str(exc)
            example = draft.add(samples, problem)
        finally:
            draft.lock.release()
        return JSONResponse({"example": example["id"], "draft": draft_view()})

    async def take_wav(request):
        example = draft.find(request.path_params["number"])
        if example is None:
            raise Refused(404, "no such take in the draft")
        return FileResponse(example["path"], media_type="audio/wav", headers={"Cache-Control": "no-store"})

    async def drop(request):
        number = (await json_body(request)).get("example")
        if not isinstance(number, int) or isinstance(number, bool):
            raise Refused(400, "example: takes a take's number")
        hold_draft()
        try:
            example = draft.find(number)
            if example is None:
                raise Refused(404, f"no take {number} in the draft")
            draft.drop(example)
        finally:
            draft.lock.release()
        return JSONResponse({"draft": draft_view()})

    async def clear(request):
        hold_draft()
        try:
            draft.clear()
        finally:
            draft.lock.release()
        return JSONResponse({"draft": draft_view()})

    def set_picture(picture: str) -> None:
        if draft.picture and not draft.picture.startswith(taught.SEED_PREFIX) and draft.picture != picture:
            Path(draft.picture).unlink(missing_ok=True)
        draft.picture = picture

    async def upload_picture(request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in PICTURE_TYPES:
            raise Refused(415, f"a picture must be a JPEG, PNG or WebP file, not {kind or 'a file of no type'}")
        body = await body_of(request, MAX_PICTURE_BYTES,
                             f"the picture is larger than {MAX_PICTURE_BYTES // 2 ** 20} MB: make it smaller")
        if not body:
            raise Refused(400, "the picture is empty")
        hold_draft()
        try:
            path = draft.folder / f"upload_{secrets.token_hex(4)}{PICTURE_TYPES[kind]}"
            path.write_bytes(body)
            try:  # the library's checks (format, size read from the header before decoding, truncation)
                await asyncio.to_thread(taught.read_picture, path, "the upload")
            except taught.TaughtError as exc:
                path.unlink(missing_ok=True)
                raise Refused(400, str(exc)) from None
            set_picture(str(path))
        finally:
            draft.lock.release()
        return JSONResponse({"draft": draft_view()})

    async def choose_seed(request):
        seed = (await json_body(request)).get("seed")
        if seed not in seeds:
            raise Refused(400, f"no bundled picture {seed!r}; choose one of the list")
        hold_draft()
        try:
            set_picture(taught.SEED_PREFIX + seed)
        finally:
            draft.lock.release()
        return JSONResponse({"draft": draft_view()})

    async def save(request):
        body = await json_body(request)
        name, as_ = body.get("name"), body.get("as") or None
        try:
            taught.check_name(name, builtins)
        except taught.TaughtError as exc:
            raise Refused(400, str(exc)) from None
        if as_ is not None and as_ not in builtins:
            raise Refused(400, f"as: {as_!r} is not a built-in class")
        n = len(draft.examples)
        if not taught.MIN_EXAMPLES <= n <= taught.MAX_EXAMPLES:
            raise Refused(400, f"{n} example{'s' if n != 1 else ''}: record {taught.MIN_EXAMPLES} to "
                               f"{taught.MAX_EXAMPLES} of the sound")
        bad = next((e for e in draft.examples if e["problem"]), None)
        if bad is not None:
            raise Refused(400, f"take {bad['id']}: {bad['problem'].removeprefix('this take: ')}; drop it")
        if as_ is None and draft.picture is None:
            raise Refused(400, "choose a picture: a bundled one or your own")
        if (taught_root() / name).exists():
            raise Refused(409, f"{name!r} is already taught: forget it first, or choose another name")
        hold_draft()
        try:
            said = await asyncio.to_thread(teach_in_child, name, [e["path"] for e in draft.examples],
                                           None if as_ else draft.picture, as_, taught_root())
            draft.clear()
        except taught.TaughtError as exc:
            raise Refused(400, str(exc)) from None
        except RuntimeError as exc:
            log.error("the console could not teach %s: %s", name, exc)
            raise Refused(500, str(exc)) from None
        finally:
            draft.lock.release()
        log.warning("the console %s", said)
        return JSONResponse({"taught": name, "shows": as_ or name, "draft": draft_view()})

    async def forget(request):
        name = (await json_body(request)).get("name")
        if not isinstance(name, str):
            raise Refused(400, "name: takes a taught sound's name")
        try:
            await asyncio.to_thread(taught.forget, name, taught_root())
        except taught.TaughtError as exc:
            raise Refused(404, str(exc)) from None
        log.warning("the console forgot the taught sound %s", name)
        return JSONResponse({"forgot": name})

    async def picture_of(path: Path | None) -> Response:
        if path is None or not path.is_file():
            raise Refused(404, "no picture")
        try:
            return Response(await asyncio.to_thread(thumbnail, path), media_type="image/jpeg",
                            headers={"Cache-Control": "no-store"})
        except OSError as exc:
            raise Refused(404, f"the picture cannot be read ({exc})") from None

    def seed_path(name: str) -> Path | None:
        try:
            return seed_image_path(name)
        except SeedImageError:
            return None

    async def taught_picture(request):
        name = request.path_params["name"]
        try:
            sound = taught.read_sound(taught_root() / name) if taught.NAME_RULE.fullmatch(name) else None
        except taught.TaughtError:
            sound = None
        if sound is None:
            raise Refused(404, f"no taught sound {name!r}")
        return await picture_of(sound.picture or seed_path(sound.as_))

    async def seed_picture(request):
        name = request.path_params["name"]
        return await picture_of(seed_path(name) if name in seeds else None)

    async def draft_picture(request):
        picture = draft.picture
        if picture is not None and picture.startswith(taught.SEED_PREFIX):
            return await picture_of(seed_path(picture[len(taught.SEED_PREFIX):]))
        return await picture_of(Path(picture) if picture else None)

    async def healthz(request):
        why = []
        if time.monotonic() - shared.drawing_at > 2.0:
            why.append("no frame drawn for over 2 s")
        if not shared.server_alive:
            why.append("the inference server does not answer")
        return Response("ok\n" if not why else "; ".join(why) + "\n", 503 if why else 200, media_type="text/plain")

    async def metrics(request):
        return Response(generate_latest(shared.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, exc.status_code)

    routes = [
        Route("/", handler(index, login=False)),
        Route("/api/session", handler(session, login=False)),
        Route("/api/login", handler(login, login=False, own_page=True), methods=["POST"]),
        Route("/api/logout", handler(logout, change=True), methods=["POST"]),
        Route("/api/state", handler(status)),
        Route("/api/stream", handler(stream)),
        Route("/api/picture.jpg", handler(picture)),
        Route("/api/control", handler(control, change=True), methods=["POST"]),
        Route("/api/open", handler(open_now, change=True), methods=["POST"]),
        Route("/api/server/restart", handler(restart_server, change=True), methods=["POST"]),
        Route("/api/test-sound", handler(test_sound, change=True), methods=["POST"]),
        Route("/api/settings", handler(settings)),
        Route("/api/settings", handler(set_setting, change=True), methods=["POST"]),
        Route("/api/teach", handler(teach_state)),
        Route("/api/teach/record", handler(record, change=True), methods=["POST"]),
        Route("/api/teach/takes/{number:int}.wav", handler(take_wav)),
        Route("/api/teach/drop", handler(drop, change=True), methods=["POST"]),
        Route("/api/teach/clear", handler(clear, change=True), methods=["POST"]),
        Route("/api/teach/picture", handler(upload_picture, change=True), methods=["POST"]),
        Route("/api/teach/picture.jpg", handler(draft_picture)),
        Route("/api/teach/seed", handler(choose_seed, change=True), methods=["POST"]),
        Route("/api/teach/seeds/{name}.jpg", handler(seed_picture)),
        Route("/api/teach/save", handler(save, change=True), methods=["POST"]),
        Route("/api/teach/forget", handler(forget, change=True), methods=["POST"]),
        Route("/api/teach/sounds/{name}.jpg", handler(taught_picture)),
        Route("/healthz", handler(healthz, login=False)),
        Route("/metrics", handler(metrics, login=False)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return app


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
