"""The inference server: a ZeroMQ ROUTER that classifies each client's 4-second windows and dreams for it.

One thread, one loop: poll the socket, answer what arrived (classify the audio windows that arrived, each answered
its own RESULT; with `hear_batch`, several clients' windows in one pass), then spend the idle time on one gradient
step of a dream keyframe for the clients that have frame credit: the steps of clients dreaming at the same layer and
size go through the network together, in one batch. A client's message can be refused (an ERROR back, and a log
line) but never stops the loop, and one client's failed window or dream costs that client its answer or its frame,
nobody else theirs.

An overloaded server degrades instead of queueing: of a client's windows waiting together only the newest is heard
(the others are answered with its result), hearing that takes more than HEAR_SHARE of the server's time is spread
thinner (each client's windows heard every n-th, the rest answered with its newest result, said in every PONG), and a
kiosk just handed over from a lost server has its short first keyframe dreamt before any window is heard.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zmq

from common import protocol
from common.errors import UserError
from common.paths import default_taught_dir
from models import audio
from models.backbones import DREAM_BACKBONE, DREAM_LAYERS, create_backbone, default_device
from models.classes import ESC50_CLASSES, class_set_probabilities, resolve_class_set
from models.dream import ASPECT, DreamEngine, GradientStep, dream_network, profile_size, step_together, to_uint8
from models.gate import GateSettings, OpenSetGate
from models.model import SHIPPED_CHECKPOINT, Ensemble, SoundClassifier, build_model, hear, load_model
from models.seeds import SeedImageError, imagenet_classes, load_seed_image, seed_image_path
from models.taught import TaughtEar

log = logging.getLogger("hear_and_see.server")

CLIENT_TIMEOUT_S = 5.0      # a client silent this long is forgotten (it re-sends HELLO when it comes back)
MAX_CREDIT = 4              # frames a client may have in flight: small, so frames are never stale
RATE_LIMIT_PER_S = 100.0    # messages per second per client, a token bucket: floods are dropped
RATE_BURST = 200.0          # (a healthy app sends ~10 a second, plus one credit per frame it receives)
POLL_IDLE_MS = 50
LOAD_WINDOW_S = 10.0        # keyframes/s is counted over this long, and the load is logged this often
# Clients' dream steps done in one batch at most, by device; elsewhere 1 (see
# BENCHMARKS.md, "Many kiosks on one server"). A window waits for a whole batch's step before it is heard. On a 2-core
# CPU a pair of steps costs 1.4-1.6 times one step: up to a third more keyframes while only dreaming, none measurable
# while hearing windows, and the window's round trip p95 doubled (0.33 -> 0.74 s with 2 kiosks), so a CPU takes turns.
# On CUDA (not measured yet) one image's step should leave much of the GPU idle; 8 is a first guess that
# benchmarks/device_bench.py is there to check.
BATCH = {"cuda": 8}
# Windows heard in one pass at most, by default: the windows of every client waiting once the socket has been read
# (each client's newest), each its window heard alone to 1e-5. On a 2-core CPU, 1: a pass of 2 windows cost
# 1.4 times one, but with 4 kiosks only 1.2-1.4 windows were waiting at once, and each waited for the others in its
# pass: the round trip's p95 went from 0.18-0.28 to 0.43 s and keyframes/s fell by a tenth
# (BENCHMARKS.md, "Many kiosks on one server"). A GPU box may gain (not measured): the venue's hear_batch, and
# benchmarks/batch_bench.py --compare windows to decide.
HEAR_BATCH = 1
# Hearing may take this share of the server's time, measured every HEAR_BUDGET_S; over it, each client's windows are
# heard every n-th (up to MAX_HEAR_EVERY), the others answered with that client's newest result, so the dreams are not
# starved (6 kiosks on a 2-core CPU send 12 windows a second at 80-150 ms each: BENCHMARKS.md, "Failover").
HEAR_SHARE = 0.6
HEAR_BUDGET_S = 1.0
MAX_HEAR_EVERY = 4
# Windows wait, conflated, while a kiosk just handed over dreams its first keyframe (a short one: FIRST_ITERATIONS
# steps per octave), but never longer than this.
HANDOVER_WAIT_S = 0.5
FIRST_ITERATIONS = 1


@dataclass
class DreamSettings:
    layer: str | None = None
    size: int = 0                # the dream's short side; 0: the machine's profile (224 on a CPU, 720 on CUDA)
    intensity: float = 1.0       # scales the classification confidence that drives the dream (toy mode: gentler)
    blend: float | None = None   # pull back toward the seed per keyframe; None: the engine's default (none)
    aspect: float = ASPECT       # width / height of the dream: the screen's, so nothing is cropped to fit
    batch: int = 0               # clients' dream steps in one batch at most; 1: one client's step at a time;
                                 # 0: the device's default (BATCH, else 1)


class TokenBucket:
    """`rate` messages a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst, self.tokens, self.refill_at = rate, burst, burst, time.monotonic()

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.refill_at) * self.rate)
        self.refill_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Window:
    """A client's window, checked, waiting to be heard with the others that arrived with it."""
    identity: bytes
    session: "Session"
    id: int | None
    samples: np.ndarray
    dbfs: float
    arrived: float
    superseded: list = field(default_factory=list)  # ids of the client's older windows this one's result answers


@dataclass
class Session:
    """What the server knows of one connected app."""
    name: str
    gate: OpenSetGate
    classes: list[str] | None = None
    kiosk: str | None = None     # the kiosk's own id, the same on every socket it opens (HELLO's `kiosk`)
    class_set: str | list[str] | None = None  # what the client asked for; taught sounds join it as they are taught
    last_seen: float = field(default_factory=time.monotonic)
    credits: int = 0
    label: str | None = None
    confidence: float = 0.0
    dbfs: float = -100.0
    engine: DreamEngine | None = None
    dreaming: Iterator | None = None  # the keyframe in progress (DreamEngine.keyframe_steps), a step at a time
    dreaming_for: tuple | None = None  # (label, layer) it is for: a change drops it
    next_step: GradientStep | None = None  # the step the keyframe in progress waits for
    stepped_at: int = 0               # the server's step count when this client's dream last took one
    handed_over: bool = False         # taken over from a lost server, and no frame from this one yet: dreamt first
    handed_at: float = 0.0            # when its picture was handed over
    frames_sent: int = 0
    windows_seen: int = 0
    last_result: dict | None = None  # the RESULT of its newest window heard: what a window not heard is answered
    asked_class: str | None = None  # the class the client's STEER asks to be dreamt whatever is heard
    intensity: float = 1.0       # the client's scale on the dream's strength
    layer: str | None = None     # the client's dream layer; None: the server's
    limit: TokenBucket = field(default_factory=lambda: TokenBucket(RATE_LIMIT_PER_S, RATE_BURST))
    over_limit: int = 0
    limit_logged_at: float = -1e9

    def what_to_dream(self) -> tuple[str | None, float]:
        """The class to dream for this client, and how strongly: the class the client asked for (at full
        strength: it was chosen, not heard), else the one its gate shows, at the gate's confidence. Which of the
        two is the client's decision (the app's is in app/modes.py: a performer's forced class, or none to
        follow what is heard); the server only carries it out."""
        if self.asked_class is not None:
            return self.asked_class, 1.0
        return self.label, self.confidence


class InferenceServer:
    def __init__(self, classifier: SoundClassifier | Ensemble, backbone_for_dreams, seeds_dir: str | Path,
                 bind: str, gate: GateSettings = GateSettings(),
                 dream: DreamSettings = DreamSettings(), curve_secret_key: bytes | None = None,
                 context: zmq.Context | None = None, kiosk_keys: str | Path | None = None,
                 taught_dir: str | Path | None = None, hear_batch: int = 0):
        if not protocol.is_loopback(bind) and curve_secret_key is None:
            raise UserError(f"refusing to bind {bind}: a non-loopback address needs CurveZMQ keys "
                            f"(run `hear-and-see keys`, then pass --server-secret-key)")
        # A venue's taught sounds are heard from the classifier's own pass (models/taught.py); the folder is looked at
        # every taught.RECHECK_S, so a sound taught or forgotten while the server runs is heard (or not) within 2 s.
        self.ear = TaughtEar(classifier, taught_dir) if taught_dir is not None and getattr(classifier, "tag_names", None) else None
        self.classifier = self.ear or classifier
        self.tag_names = list(getattr(classifier, "tag_names", None) or ())  # AudioSet's, when the classifier has them
        self.dream_backbone = backbone_for_dreams
        self.seeds_dir = Path(seeds_dir)
        self.gate_settings, self.dream_settings = gate, dream
        self.sessions: dict[bytes, Session] = {}
        self._dream_net = None  # one dream network for every client's engine: what lets their steps share a batch
        device = next(backbone_for_dreams.parameters()).device
        self.batch = max(1, dream.batch or BATCH.get(device.type, 1))
        self.hear_batch = hear_batch or HEAR_BATCH  # windows heard in one pass at most; 1: one at a time
        self._windows: list[Window] = []  # at most one per client: its newest
        self.hear_every = 1  # each client's windows heard every n-th: more than 1 when hearing is over its budget
        self._hearing_s, self._budget_at = 0.0, time.monotonic()
        self._strangers = TokenBucket(RATE_LIMIT_PER_S, RATE_BURST)
        self._seed_cache: dict[str, np.ndarray] = {}
        self._missing_seeds: set[str] = set()
        self.ctx = context or zmq.Context.instance()
        self.socket = self.ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES + 4096)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting app takes its identity back
        self.authenticator = None
        if kiosk_keys is not None:
            if curve_secret_key is None:
                raise UserError("kiosk keys need the server's own CurveZMQ keys too (--server-secret-key)")
            # ZAP: the handshake of a kiosk whose public key is not in the folder fails; it never reaches the loop.
            from zmq.auth.thread import ThreadAuthenticator

            self.authenticator = ThreadAuthenticator(self.ctx)
            self.authenticator.start()
            self.authenticator.configure_curve(domain="*", location=str(kiosk_keys))
        if curve_secret_key is not None:
            self.socket.curve_secretkey = curve_secret_key
            self.socket.curve_publickey = zmq.curve_public(curve_secret_key)
            self.socket.curve_server = True
        # The first forward pass pays for lazy initialisation; pay it now, not in a client's first window. The same
        # for the dream (its network made, each octave's first step): a kiosk taken over from a lost server by one
        # that has not dreamt yet would otherwise wait for it (0.2 s and more on a 2-core CPU) before its first frame.
        classifier.predict(np.zeros((1, audio.N_SAMPLES), dtype=np.float32))
        warm = self._new_engine(dream.layer)
        warm.set_seed("warm-up", np.full((64, 64, 3), 128, np.uint8))
        warm.next_keyframe(1.0)
        self.socket.bind(bind)
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # dream_steps: forward and backward passes; dream_images: images they stepped (their ratio: the mean batch)
        # windows: heard; conflated: answered with a newer window's result; skipped: with the last one's (over budget)
        self.stats = {"windows": 0, "conflated": 0, "skipped": 0, "frames": 0, "errors": 0, "dropped": 0,
                      "dream_steps": 0, "dream_images": 0}
        self._frame_times: list[float] = []  # when the keyframes of the last LOAD_WINDOW_S went out
        self._load_logged_at = time.monotonic()
        log.info("serving on %s with %s classifier (%s%s), %d classes; dreams in batches of up to %d", self.address,
                 classifier.backbone.name, "trained" if classifier.trained else "UNTRAINED head",
                 f", ensemble of {len(classifier.members)}" if isinstance(classifier, Ensemble) else "",
                 len(classifier.class_names), self.batch)

    # --- the loop -------------------------------------------------------------------------------
    def serve_forever(self, should_stop=lambda: False) -> None:
        try:
            while not should_stop():
                self.turn()
        finally:
            self.close()

    def turn(self) -> None:
        """One pass of the loop: read the socket, hear the windows waiting, dream one step."""
        busy = any(self._wants_frames(s) for s in self.sessions.values())
        if self.socket.poll(0 if busy else POLL_IDLE_MS):
            self._drain()
        if self._windows and not self._handing_over():
            self._hear_windows()
        self._forget_silent_clients()
        if self.ear is not None:
            self.ear.refresh()  # a sound just taught is fitted now, not when the next window waits for it
        self._dream_step()
        self._rebudget()
        self._log_load()

    def close(self) -> None:
        self.socket.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()

    def _drain(self, limit: int = 64) -> None:
        for _ in range(limit):
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            self.handle(parts[0], parts[1:])

    def handle(self, identity: bytes, parts: list[bytes]) -> None:
        """Answer one message from one client; every failure ends here as a log line and an ERROR."""
        now = time.monotonic()
        session = self.sessions.get(identity)
        if session is None and not self._strangers.allow(now):
            self.stats["dropped"] += 1  # clients that never said HELLO share one small allowance
            return
        if session is not None and not session.limit.allow(now):
            self.stats["dropped"] += 1
            session.over_limit += 1
            if now - session.limit_logged_at >= 1.0:  # a flood must not become a flood of log lines
                log.warning("client %s over rate limit: %d messages dropped", session.name, session.over_limit)
                session.limit_logged_at, session.over_limit = now, 0
            return
        header: dict = {}
        try:
            header, payload = protocol.decode(parts)
            kind = header["kind"]
            if kind in (protocol.HELLO, protocol.IMAGE, protocol.STEER) and session is not None:
                self._hear_windows(session)  # a client's window is heard before what it says after it
            if kind == protocol.HELLO:
                self._hello(identity, header, now)
                return
            if kind == protocol.PING and session is None:  # a kiosk served elsewhere asks how loaded we are
                self._send(identity, self._pong(header))
                return
            if session is None:
                raise protocol.ProtocolError("unknown_client", "send HELLO first")
            if kind == protocol.PING:
                self._send(identity, self._pong(header))
            elif kind == protocol.IMAGE:
                self._take_over(session, header, payload)
            elif kind == protocol.CREDIT:
                last, window = header.get("last_frame"), header.get("window")
                if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (last, window)):
                    raise protocol.ProtocolError("bad_field", "credit needs last_frame and window, ints >= 0")
                # Stated, not added: a lost or repeated CREDIT cannot make frames pile up or stall.
                session.credits = max(0, min(MAX_CREDIT, window - max(0, session.frames_sent - last)))
            elif kind == protocol.STEER:
                self._steer(session, header)
            elif kind == protocol.AUDIO:
                self._listen(identity, session, header, payload)
            else:
                raise protocol.ProtocolError("bad_kind", f"a client does not send {kind!r}")
            # Stamped after the work: time spent classifying must not count as the client's silence.
            session.last_seen = time.monotonic()
        except protocol.ProtocolError as exc:
            self.stats["errors"] += 1
            name = session.name if session else identity.hex()
            log.warning("refused a message from %s: %s", name, exc)
            request_id = header.get("id")
            self._send(identity, protocol.encode(protocol.ERROR, code=exc.code, message=str(exc),
                                                 id=request_id if isinstance(request_id, int) else None))
        except Exception:  # a bug must not take the kiosk down: log it whole and carry on
            self.stats["errors"] += 1
            log.exception("failed to handle a message from %s", session.name if session else identity.hex())
            self._send(identity, protocol.encode(protocol.ERROR, code="internal", message="server error"))

    def _hello(self, identity: bytes, header: dict, now: float) -> None:
        name = str(header.get("client", identity.hex()))[:64]
        try:
            classes = resolve_class_set(header.get("classes"), self.classifier.class_names, self.tag_names)
        except ValueError as exc:
            raise protocol.ProtocolError("bad_classes", str(exc)) from exc
        kiosk = header.get("kiosk")[:64] if isinstance(header.get("kiosk"), str) else None
        # A kiosk back on a fresh socket (its heartbeat missed one busy second) takes its dream back with it.
        previous = next((i for i, s in self.sessions.items() if kiosk is not None and s.kiosk == kiosk), None)
        self.sessions[identity] = Session(
            name=name, classes=classes, kiosk=kiosk, class_set=header.get("classes"),
            gate=OpenSetGate(self.gate_settings, class_names=classes or self.classifier.class_names,
                             tag_names=self.tag_names),
            engine=self.sessions.pop(previous).engine if previous is not None else None)
        log.info("client %s connected (%d clients)", name, len(self.sessions))
        self._send(identity, self._pong(header))

    def load(self) -> dict:
        """What a heartbeat answer says of this server: kiosks served, keyframes/s over the last LOAD_WINDOW_S,
        and the load score kiosks compare (kiosks served; fewer is better)."""
        now = time.monotonic()
        self._frame_times = [t for t in self._frame_times if now - t <= LOAD_WINDOW_S]
        return {"kiosks": len(self.sessions), "keyframes_per_s": round(len(self._frame_times) / LOAD_WINDOW_S, 2),
                "load": float(len(self.sessions)), "hears_every": self.hear_every}

    def _pong(self, header: dict) -> list[bytes]:
        return protocol.encode(protocol.PONG, t=header.get("t"), **self.load())

    def _log_load(self) -> None:
        now = time.monotonic()
        if now - self._load_logged_at >= LOAD_WINDOW_S:
            self._load_logged_at = now
            load = self.load()
            log.info("serving %d kiosks at %.2f keyframes/s, hearing %s (windows so far: %d heard, %d conflated, "
                     "%d skipped)", load["kiosks"], load["keyframes_per_s"], _every(self.hear_every),
                     self.stats["windows"], self.stats["conflated"], self.stats["skipped"])

    def _rebudget(self) -> None:
        """Every HEAR_BUDGET_S: hear each client's windows every n-th, n the least that keeps hearing within
        HEAR_SHARE of the time (1 when it fits)."""
        now = time.monotonic()
        if now - self._budget_at < HEAR_BUDGET_S:
            return
        every_window = self._hearing_s / (now - self._budget_at) * self.hear_every  # the share if all were heard
        every = min(MAX_HEAR_EVERY, max(1, math.ceil(every_window / HEAR_SHARE)))
        if every != self.hear_every:
            log.info("hearing %s of each kiosk: hearing them all would take %.0f%% of the time", _every(every),
                     every_window * 100)
        self.hear_every, self._hearing_s, self._budget_at = every, 0.0, now

    def _handing_over(self) -> bool:
        """A kiosk just handed over is dreaming its first keyframe: the waiting windows wait (up to HANDOVER_WAIT_S),
        since its screen has had no live frame since the loss, and the other kiosks' have their labels."""
        return (any(s.handed_over and self._wants_frames(s) for s in self.sessions.values())
                and time.monotonic() - min(w.arrived for w in self._windows) < HANDOVER_WAIT_S)

    def _take_over(self, session: Session, header: dict, image: np.ndarray) -> None:
        """A kiosk whose server was lost hands over the picture on its screen: its dream goes on from there
        instead of starting again at the seed."""
        label, confidence = protocol.check_image(header, image, session.classes or self.classifier.class_names)
        layer = session.layer or self.dream_settings.layer
        if session.engine is None or (layer is not None and session.engine.layer != layer):
            session.engine = self._new_engine(layer)
        session.engine.reset()
        session.engine.set_seed(label, self._seed(label), imagenet_classes(label))
        session.engine.set_image(np.ascontiguousarray(image))
        session.dreaming = session.next_step = None
        session.gate.carry_on(label, time.monotonic())
        session.label, session.confidence = label, confidence  # dreamt at once, as the old server did
        session.handed_over, session.handed_at = True, time.monotonic()
        log.info("client %s handed over its %s picture (%dx%d)", session.name, label, image.shape[1], image.shape[0])

    def _new_engine(self, layer: str | None) -> DreamEngine:
        d = self.dream_settings
        device = next(self.dream_backbone.parameters()).device
        if self._dream_net is None:
            self._dream_net = dream_network(self.dream_backbone, device)
        options = {} if d.blend is None else {"blend": d.blend}
        return DreamEngine(self.dream_backbone, layer=layer, size=d.size or profile_size(device), aspect=d.aspect,
                           net=self._dream_net, **options)

    def _steer(self, session: Session, header: dict) -> None:
        asked, intensity, layer = header.get("class"), header.get("intensity", 1.0), header.get("layer")
        if asked is not None and asked not in self._names(session):
            raise protocol.ProtocolError("bad_field", f"class {asked!r} is not in this client's class set")
        if isinstance(intensity, bool) or not isinstance(intensity, (int, float)) or not 0.0 <= intensity <= 1.0:
            raise protocol.ProtocolError("bad_field", f"intensity must be a number within 0..1, got {intensity!r}")
        if layer is not None and layer not in DREAM_LAYERS[self.dream_backbone.name]:
            raise protocol.ProtocolError("bad_field", f"layer {layer!r} is not one of "
                                                      f"{', '.join(DREAM_LAYERS[self.dream_backbone.name])}")
        session.asked_class, session.intensity, session.layer = asked, float(intensity), layer
        log.info("client %s steers: class %s, intensity %.2f, layer %s", session.name, asked, intensity, layer)

    def _listen(self, identity: bytes, session: Session, header: dict, samples: np.ndarray) -> None:
        """Check a window and queue it, to be heard with the others' (_hear_windows). A client has one window
        waiting at most, its newest: an older one is out of date (the app shows the newest result) and is answered
        with the newer one's result. Over budget, a window not due to be heard is answered with the client's
        newest result at once."""
        protocol.check_audio(header, samples, audio.SAMPLE_RATE, audio.N_SAMPLES)
        request_id = header.get("id") if isinstance(header.get("id"), int) else None
        session.windows_seen += 1
        waiting = next((k for k, w in enumerate(self._windows) if w.session is session), None)
        if waiting is None and session.last_result is not None and session.windows_seen % self.hear_every:
            self.stats["skipped"] += 1
            self._send(identity, protocol.encode(protocol.RESULT, **{**session.last_result, "id": request_id}))
            return
        window = Window(identity, session, request_id, audio.pad_or_trim(samples.astype(np.float32), audio.N_SAMPLES),
                        audio.rms_dbfs(samples), time.monotonic())
        if waiting is None:
            self._windows.append(window)
            return
        older = self._windows[waiting]
        window.arrived, window.superseded = older.arrived, [*older.superseded, older.id]
        self._windows[waiting] = window  # its place in the queue: a client that floods is not heard more often
        self.stats["conflated"] += 1

    def _hear_windows(self, only: Session | None = None) -> None:
        """Hear the waiting windows (`only`'s, if given), `hear_batch` at a time."""
        windows = [w for w in self._windows if only is None or w.session is only]
        self._windows = [w for w in self._windows if only is not None and w.session is not only]
        for start in range(0, len(windows), self.hear_batch):
            self._hear_pass(windows[start:start + self.hear_batch])

    def _hear_pass(self, windows: list[Window]) -> None:
        """Hear windows in one pass and answer each client its own RESULT, through its own gate. Should the pass
        fail, each window is heard alone, so a window that breaks the classifier costs its client an ERROR and
        nobody else anything."""
        start = time.perf_counter()
        try:
            heard = self._hear(np.stack([w.samples for w in windows]))
        except Exception:
            if len(windows) > 1:
                log.warning("hearing %d windows together failed; hearing each alone", len(windows), exc_info=True)
            heard = []
            for w in windows:
                try:
                    heard.extend(self._hear(w.samples[None]))
                except Exception:
                    heard.append(None)
        self._hearing_s += time.perf_counter() - start
        ms = (time.perf_counter() - start) * 1000
        for w, one in zip(windows, heard):
            try:
                if one is None:
                    raise RuntimeError("the classifier failed on this window")
                self._answer(w, *one, ms)
            except Exception:
                self.stats["errors"] += 1
                log.exception("failed to hear a window from %s", w.session.name)
                for request_id in [*w.superseded, w.id]:
                    self._send(w.identity, protocol.encode(protocol.ERROR, code="internal", message="server error",
                                                           id=request_id))
            w.session.last_seen = time.monotonic()  # time spent hearing must not count as the client's silence

    def _hear(self, windows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None, set, set]]:
        """(B, N_SAMPLES) windows -> per window: class probabilities, AudioSet tags (or None), the labels near a taught
        sound's examples (voiced) and those taught sounds carry (models/taught.Heard)."""
        if self.ear is not None:
            heard = self.ear.listen(windows)
            return [(heard.probs[i], heard.tags[i], heard.voiced[i], heard.taught[i]) for i in range(len(windows))]
        probs, tags = hear(self.classifier, windows)
        return [(probs[i], None if tags is None else tags[i], set(), set()) for i in range(len(windows))]

    def _answer(self, w: Window, probs: np.ndarray, tags: np.ndarray | None, voiced: set, taught: set,
                ms: float) -> None:
        session = w.session
        names = self._names(session)
        if names != self.classifier.class_names:
            probs = class_set_probabilities(probs, self.classifier.class_names, names, tags, self.tag_names)
        label, confidence = session.gate.update(dict(zip(names, probs.tolist())), w.dbfs, time.monotonic(), tags,
                                                voiced, taught)
        session.label, session.confidence, session.dbfs = label, confidence, w.dbfs
        order = np.argsort(probs)[::-1][:5]
        heard = [] if tags is None else [[self.tag_names[i], float(tags[i])] for i in np.argsort(tags)[::-1][:3]]
        self.stats["windows"] += 1
        session.last_result = dict(label=label, confidence=float(confidence), dbfs=float(w.dbfs),
                                   top=[[names[i], float(probs[i])] for i in order], tags=heard,
                                   trained=self.classifier.trained, ms=ms, heard_id=w.id)
        for request_id in [*w.superseded, w.id]:  # oldest first, so the app's newest answer is its newest window's
            self._send(w.identity, protocol.encode(protocol.RESULT, **{**session.last_result, "id": request_id}))

    def _names(self, session: Session) -> list[str]:
        """The classes a client's window is heard as: its class set (all, by default) and the taught sounds as they
        are now; a set of taught sounds only ("taught") follows the folder."""
        everything = self.classifier.class_names
        if session.classes is None and session.class_set != "taught":
            return everything
        taught = [s.name for s in self.ear.sounds if s.as_ is None] if self.ear is not None else []
        return [*(session.classes or []), *(t for t in taught if t not in (session.classes or []))]

    # --- dreaming -------------------------------------------------------------------------------
    @staticmethod
    def _wants_frames(session: Session) -> bool:
        return session.credits > 0 and session.what_to_dream()[0] is not None

    def _dream_step(self) -> None:
        """One gradient step for the dream furthest into its keyframe, together with the other clients' at the same
        layer and size (up to `batch`); each frame goes out when its keyframe's last step is done. A step, not a
        keyframe, per turn: between them the loop answers every client, so a window waits for one step (tens of
        ms) before it is heard, and a keyframe slower than the clients' 1 s liveness timeout (a loaded CPU) never
        reads as a dead server. Furthest first: a keyframe begun is finished before another client's begins (the
        clients take turns), and a dream that fell out of step with the others (it began alone, or its credit ran
        out) finishes its keyframe while they wait at the start of theirs, then starts its next with them. A kiosk
        just taken over from a lost server goes before them all: its screen has had no live frame since the loss, the
        others' have theirs."""
        waiting = [i for i in list(self.sessions) if self._wants_frames(self.sessions[i]) and self._next_step(i)]
        if not waiting:
            return
        waiting.sort(key=lambda i: (not self.sessions[i].handed_over,
                                    tuple(-n for n in self.sessions[i].next_step.stage), self.sessions[i].stepped_at))
        lead = self.sessions[waiting[0]].next_step
        # Only steps at the same point of their keyframes: a dream one step behind another would otherwise be
        # batched with it one step behind for ever, each batch half of it alone (at another image size).
        group = [i for i in waiting
                 if (self.sessions[i].next_step.key, self.sessions[i].next_step.stage) == (lead.key, lead.stage)]
        if self.sessions[waiting[0]].handed_over:
            # Kiosks handed over together are dreamt together, whatever the batch: each waits for the slowest of
            # them anyway, and a batch of 3 small steps costs 0.6 times 3 steps in turns on a CPU.
            group = [i for i in group if self.sessions[i].handed_over]
        else:
            group = group[:self.batch]
        steps = [self.sessions[i].next_step for i in group]
        try:
            images = step_together(steps)
        except Exception:
            if len(group) == 1:
                self._dream_failed(group[0])
                return
            # one client's broken dream must not cost the others theirs: each alone, and only the broken one fails
            log.warning("a batch of %d dream steps failed; stepping each alone", len(group), exc_info=True)
            images = []
            for identity, step in zip(group, steps):
                try:
                    images.append(step_together([step])[0])
                except Exception:
                    self._dream_failed(identity)
                    images.append(None)
        self.stats["dream_steps"] += 1
        self.stats["dream_images"] += len(group)
        for identity, image in zip(group, images):
            if image is not None:
                self._advance(identity, image)

    def _next_step(self, identity: bytes) -> bool:
        """Make sure the client's keyframe in progress is for what it wants dreamt now, beginning one if need be;
        False when there is no step to take (no seed image, a failure, or a keyframe that needed none)."""
        session = self.sessions[identity]
        label, confidence = session.what_to_dream()
        d = self.dream_settings
        layer = session.layer or d.layer
        try:
            if session.dreaming is not None and session.dreaming_for != (label, layer):
                session.dreaming = None  # dreamt for another class or layer: never committed, so simply dropped
            if session.dreaming is None:
                if session.engine is None or (layer is not None and session.engine.layer != layer):
                    previous = session.engine
                    session.engine = self._new_engine(layer)
                    if previous is not None and previous.image is not None:
                        # a performer's layer change morphs the picture on screen, it does not restart at the seed
                        session.engine.set_seed(label, self._seed(label), imagenet_classes(label))
                        session.engine.set_image(to_uint8(previous.image))
                if session.engine.current_seed != label:
                    session.engine.set_seed(label, self._seed(label), imagenet_classes(label))
                # Loudness drives the zoom: -50 dBFS (quiet) .. -10 dBFS (loud) maps to 0 .. 1.
                zoom_speed = float(np.clip((session.dbfs + 50.0) / 40.0, 0.0, 1.0))
                session.dreaming = session.engine.keyframe_steps(
                    intensity=confidence * session.intensity * d.intensity, zoom_speed=zoom_speed,
                    iterations=FIRST_ITERATIONS if session.handed_over else None)
                session.dreaming_for = (label, layer)
                session.next_step = None
                part = next(session.dreaming)
                if not isinstance(part, GradientStep):  # a keyframe with no step to take (zero intensity)
                    self._send_frame(identity, part)
                    return False
                session.next_step = part
        except SeedImageError as exc:
            session.dreaming = None
            if label not in self._missing_seeds:  # said once per class, not on every retry
                self._missing_seeds.add(label)
                log.error("no dream for %s: %s", label, exc)
            session.credits = 0  # the app shows its fallback and asks again
            return False
        except Exception:
            self._dream_failed(identity)
            return False
        return True

    def _advance(self, identity: bytes, image) -> None:
        """Hand a client's keyframe its stepped image; send the frame when that was its last step."""
        session = self.sessions[identity]
        session.stepped_at = self.stats["dream_steps"]
        try:
            part = session.dreaming.send(image)
        except Exception:
            self._dream_failed(identity)
            return
        if isinstance(part, GradientStep):
            session.next_step = part  # more steps to go
        else:
            self._send_frame(identity, part)

    def _send_frame(self, identity: bytes, frame: np.ndarray) -> None:
        session = self.sessions[identity]
        session.dreaming = session.next_step = None
        if session.handed_over:
            log.info("client %s dreamt again: its first frame %.2f s after its hand-over", session.name,
                     time.monotonic() - session.handed_at)
        session.handed_over = False
        session.credits -= 1
        session.frames_sent += 1
        self.stats["frames"] += 1
        self._frame_times.append(time.monotonic())
        self._send(identity, protocol.encode(protocol.FRAME, frame, id=session.frames_sent,
                                             label=session.dreaming_for[0], source="live",
                                             zoom=session.engine.last_zoom_step))

    def _dream_failed(self, identity: bytes) -> None:
        session = self.sessions[identity]
        session.dreaming = session.next_step = None
        log.exception("dream for %s (%s) failed; no frame this turn", session.name, session.what_to_dream()[0])
        session.credits = 0  # the app shows its fallback and asks again

    def _seed(self, label: str) -> np.ndarray:
        """The picture `label` dreams from: a taught sound's own, else the class's seed (models/seeds.py)."""
        pictures = {s.name: s.picture for s in self.ear.sounds if s.picture} if self.ear is not None else {}
        path = str(pictures.get(label) or seed_image_path(label, self.seeds_dir))
        if path not in self._seed_cache:
            self._seed_cache[path] = load_seed_image(path)
        return self._seed_cache[path]

    # --- housekeeping ---------------------------------------------------------------------------
    def _forget_silent_clients(self) -> None:
        now = time.monotonic()
        for identity in [i for i, s in self.sessions.items() if now - s.last_seen > CLIENT_TIMEOUT_S]:
            log.info("client %s silent for %.0f s: forgotten", self.sessions[identity].name, CLIENT_TIMEOUT_S)
            del self.sessions[identity]

    def _send(self, identity: bytes, parts: list[bytes]) -> None:
        try:
            self.socket.send_multipart([identity, *parts], zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the client is not reading: a stale reply is worthless, drop it
            self.stats["dropped"] += 1


def _every(n: int) -> str:
    return "every window" if n == 1 else f"one window in {n}"


def serve(checkpoint: str | Path | None, seeds_dir: str | Path, bind: str, device: str | None = None,
          gate: GateSettings = GateSettings(), dream: DreamSettings = DreamSettings(),
          backbone: str | None = None, curve_secret_key: bytes | None = None, threads: int | None = None,
          kiosk_keys: str | Path | None = None, should_stop=lambda: False, taught_dir: str | Path | None = None,
          advertise: bool = False, hear_batch: int = 0):
    """Load the classifier and the dream backbone, then serve until `should_stop()`. The venue's taught sounds are
    heard from `taught_dir` (default: common.paths.default_taught_dir()). `advertise`: announced on the local
    network while it serves (common/discovery.py), with its public key's fingerprint when it has keys. `hear_batch`:
    windows heard in one pass at most (0: HEAR_BATCH)."""
    if advertise and not bind.startswith("tcp://"):  # said before minutes of loading, not after
        raise UserError(f"only a tcp:// address can be advertised on the network, not {bind}")
    device = torch.device(device) if device else default_device()
    # One core stays free for the app's renderer when both run on one machine (as `make run` does);
    # oversubscribed torch threads spin-wait and make every window late.
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - 1))
    if checkpoint is None and not SHIPPED_CHECKPOINT.is_file():
        log.warning("UNTRAINED MODEL: no checkpoint and no shipped model at %s; classifying with an "
                    "untrained head (labels are meaningless)", SHIPPED_CHECKPOINT)
        classifier = build_model(backbone or "efficientnet_lite0", ESC50_CLASSES).to(device).eval()
    else:
        classifier = load_model(checkpoint, device=device, backbone=backbone)
    # Dreams climb an ImageNet network: the classifier's own when it has one (fine-tuned on spectrograms, so a
    # fresh ImageNet copy of it), else the one that ships with ImageNet weights.
    imagenet_name = classifier.backbone.name if classifier.backbone.name in DREAM_LAYERS else DREAM_BACKBONE
    dream_backbone = create_backbone(imagenet_name).to(device).eval()
    server = InferenceServer(classifier, dream_backbone, seeds_dir, bind, gate, dream, curve_secret_key,
                             kiosk_keys=kiosk_keys, taught_dir=taught_dir or default_taught_dir(),
                             hear_batch=hear_batch)
    advertisement = None
    if advertise:
        from common.discovery import Advertisement

        try:
            advertisement = Advertisement(server.address, zmq.curve_public(curve_secret_key) if curve_secret_key else None)
        except (UserError, OSError) as exc:
            server.close()
            raise UserError(f"cannot advertise {server.address} on the local network: {exc}") from exc
    try:
        server.serve_forever(should_stop)
    finally:
        if advertisement is not None:
            advertisement.close()
    return server
