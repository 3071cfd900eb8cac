"""The app's side of the wire: a DEALER per server that sends windows, heartbeats, and frame credit, and reconnects
by itself.

A venue may list several servers. The client follows the ZeroMQ guide's brokerless reliability ("freelance",
model 2: every server is pinged, one is used) with its heartbeating and lazy-pirate patterns: it pings every server
every PING_INTERVAL_S (a server answers with its load), counts one dead after SERVER_TIMEOUT_S of silence (or at
once when it closes the connection: its process ended), then closes that socket and opens a fresh one (so no stale
request survives). The kiosk is heard and dreamt by one server, the least loaded that answers, and stays with it while it answers (no flapping); when it stops, the next
least loaded takes over at once, and is handed the picture on screen (IMAGE) so the dream goes on from there.
Servers found on the network (common/discovery.py) join the list as they appear and leave it as they go.
Frames are "latest wins": the server sends a frame only while fewer than CREDIT_WINDOW are unacknowledged
(credit-based flow control), and `poll` keeps only the newest of those that arrived.
"""
from __future__ import annotations

import logging
import random
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from common import protocol

PING_INTERVAL_S = 0.25
SERVER_TIMEOUT_S = 1.0
CREDIT_WINDOW = 2      # frames in flight: one being shown, one on its way
FIRST_CHOICE_WAIT_S = 0.3  # at start, how long the first server to answer waits for the others to answer too

log = logging.getLogger("hear_and_see.client")


def free_tcp_address() -> str:
    """A loopback address no one listens on: where the app starts its own server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@dataclass
class Result:
    id: int | None
    label: str | None
    confidence: float
    top: list
    dbfs: float
    trained: bool
    ms: float
    tags: tuple = ()       # AudioSet's strongest tags, [name, probability] pairs (the gate reads them)


@dataclass
class Frame:
    id: int
    label: str
    image: np.ndarray
    received_at: float
    zoom: float | None = None  # log-zoom of this keyframe beyond the last (protocol: optional `zoom`)


@dataclass
class Link:
    """One server: its own DEALER, pinged whether or not it hears this kiosk."""
    address: str
    socket: zmq.Socket | None = None
    connected_at: float = 0.0
    last_heard: float = 0.0
    load: float = float("inf")   # the server's load score from its last PONG (fewer kiosks is better)
    kiosks: int = 0
    keyframes_per_s: float = 0.0
    last_ping: float = field(default=0.0)
    monitor: zmq.Socket | None = None  # the socket's disconnection events
    hung_up: bool = False        # the server closed the connection: its process is gone (a crash, a kill, a restart)

    def answering(self, now: float) -> bool:
        return self.last_heard >= self.connected_at and now - self.last_heard <= SERVER_TIMEOUT_S


class InferenceClient:
    def __init__(self, addresses: str | Sequence[str], name: str = "app", classes=None,
                 context: zmq.Context | None = None, server_key: bytes | None = None,
                 kiosk_key: tuple[bytes, bytes] | None = None, discovery=None):
        """`discovery`: where more servers come from as they appear and go (common.discovery.Browser: its
        `found()`), beside the fixed `addresses`."""
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.listed, self.discovery = tuple(addresses), discovery
        self.name, self.classes = name, classes
        self.kiosk = uuid.uuid4().hex  # this kiosk, whichever socket and server it is on
        self.server_key, self.kiosk_key = server_key, kiosk_key
        self.ctx = context or zmq.Context.instance()
        self.links = [Link(a) for a in addresses]
        self.active: Link | None = None  # the server that hears and dreams for this kiosk
        self.reconnects = 0
        self.switches = 0                # times another server took this kiosk over
        self.errors: list[str] = []
        self.round_trip_ms: float | None = None  # the last heartbeat's, PING to PONG
        self._next_id = 0
        self._last_frame = 0            # id of the newest frame received: the server's credit is counted from it
        self._steering: dict | None = None  # what the app asked to be dreamt, re-sent to every server we reach
        self._on_screen: tuple[str, np.ndarray] | None = None  # the live picture shown last: what a new server gets
        self._confidence: dict[str, float] = {}  # the last confidence heard per class: the new server dreams as strongly
        self._first_answer: float | None = None
        self._used_one = False           # a server has heard this kiosk before: a choice now is a take-over
        self.wants_window = False        # a server just took this kiosk: it should hear the room now, not next hop
        self._poller = zmq.Poller()
        for link in self.links:
            self._connect(link)

    @property
    def address(self) -> str:
        if self.active is None and not self.links:
            return "none found yet on the network"
        return (self.active or self.links[0]).address

    @property
    def alive(self) -> bool:
        """Is a server hearing this kiosk, and has it answered within SERVER_TIMEOUT_S?"""
        return self.active is not None and self.active.answering(time.monotonic())

    def _connect(self, link: Link) -> None:
        if link.socket is not None:
            self._close(link)
            self.reconnects += 1
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, f"{self.name}-{uuid.uuid4().hex[:8]}".encode())
        s.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES + 4096)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 8)
        if self.server_key is not None:
            s.curve_serverkey = self.server_key
            s.curve_publickey, s.curve_secretkey = self.kiosk_key or zmq.curve_keypair()
        # A server whose process ends (a crash, a kill) closes the connection, which says so at once; only one that
        # falls silent (a power cut, a cable) costs the heartbeat's SERVER_TIMEOUT_S.
        link.monitor = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        s.connect(link.address)
        link.socket, link.connected_at, link.last_ping, link.hung_up = s, time.monotonic(), 0.0, False
        self._poller.register(s, zmq.POLLIN)
        self._poller.register(link.monitor, zmq.POLLIN)

    def _close(self, link: Link) -> None:
        self._poller.unregister(link.socket)
        self._poller.unregister(link.monitor)
        link.socket.disable_monitor()
        link.monitor.close(linger=0)
        link.socket.close(linger=0)

    def _use(self, link: Link) -> None:
        """Be heard and dreamt by `link` from now on: a session there, with the steering and the picture on screen."""
        self.switches += self._used_one
        self._used_one = True
        log.info("heard and dreamt by %s (load %g, %d kiosks)", link.address, link.load, link.kiosks)
        self.active, self._last_frame = link, 0
        self.wants_window = True
        self._hello()
        if self._on_screen is not None:
            label, image = self._on_screen
            self._send(protocol.encode(protocol.IMAGE, image, label=label, confidence=self._confidence.get(label, 0.0)))
        self._grant_credit()

    def _hello(self) -> None:
        self._send(protocol.encode(protocol.HELLO, client=self.name, kiosk=self.kiosk, classes=self.classes,
                                   t=time.time()))
        if self._steering is not None:
            self._send(protocol.encode(protocol.STEER, **self._steering))

    def steer(self, dream_class: str | None, intensity: float, layer: str | None) -> None:
        """Ask the server to dream `dream_class` whatever is heard (None: what it hears), at `intensity`, on
        `layer` (None: the server's)."""
        self._steering = {"class": dream_class, "intensity": float(intensity), "layer": layer}
        self._send(protocol.encode(protocol.STEER, **self._steering))

    def shown(self, frame: Frame) -> None:
        """The app shows this live frame: it is what another server continues from, should this one be lost."""
        self._on_screen = (frame.label, frame.image)

    def _send(self, parts: list[bytes], link: Link | None = None) -> bool:
        link = link or self.active
        if link is None:
            return False
        try:
            link.socket.send_multipart(parts, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # SNDHWM messages already wait for a server that is away or not reading: drop this one
            return False

    def send_window(self, samples: np.ndarray, sample_rate: int) -> int | None:
        """Ask for one window to be classified; returns its request id, or None if it could not be sent."""
        if not self.alive:
            return None
        self.wants_window = False
        self._next_id += 1
        sent = self._send(protocol.encode(protocol.AUDIO, np.asarray(samples, dtype=np.float32),
                                          id=self._next_id, sample_rate=sample_rate))
        return self._next_id if sent else None

    def poll(self, timeout_ms: int = 0) -> tuple[list[Result], Frame | None]:
        """Results that arrived, and the newest frame (older ones are dropped unseen). Keeps the links alive."""
        now = time.monotonic()
        results, newest = [], None
        ready = dict(self._poller.poll(timeout_ms))
        for link in self.links:
            while link.monitor in ready and link.monitor.poll(0):
                event = recv_monitor_message(link.monitor)["event"]
                # Only a server that was answering hung up; a refused handshake closes connections that never were.
                link.hung_up = link.hung_up or (event == zmq.EVENT_DISCONNECTED and link.last_heard >= link.connected_at)
            while link.socket in ready:
                try:
                    parts = link.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                message = self._receive(link, parts, now)
                if isinstance(message, Result):
                    results.append(message)
                elif isinstance(message, Frame):
                    newest = message
        self._keep_alive(now)
        return results, newest

    def _receive(self, link: Link, parts: list[bytes], now: float):
        try:
            header, payload = protocol.decode(parts)
        except protocol.ProtocolError as exc:
            log.warning("ignored a malformed message from %s: %s", link.address, exc)
            return None
        if not link.answering(now):
            log.info("server %s is answering", link.address)
        link.last_heard = now
        self._first_answer = self._first_answer or now
        kind = header["kind"]
        if kind == protocol.PONG and isinstance(header.get("load"), (int, float)):
            link.load, link.kiosks = float(header["load"]), int(header.get("kiosks") or 0)
            link.keyframes_per_s = float(header.get("keyframes_per_s") or 0.0)
        if link is not self.active:
            return None  # a server that does not hear this kiosk only tells its load; anything else is stale
        if kind == protocol.RESULT:
            if isinstance(header.get("label"), str) and isinstance(header.get("confidence"), (int, float)):
                self._confidence = {header["label"]: float(header["confidence"])}
            return Result(header.get("id"), header.get("label"), float(header.get("confidence", 0.0)),
                          header.get("top", []), float(header.get("dbfs", -100.0)),
                          bool(header.get("trained", False)), float(header.get("ms", 0.0)),
                          tuple(header.get("tags") or ()))
        if kind == protocol.PONG and isinstance(header.get("t"), float):
            self.round_trip_ms = (time.time() - header["t"]) * 1000
        if kind == protocol.FRAME:
            self._last_frame = int(header.get("id", 0))
            self._grant_credit()
            try:
                protocol.check_frame(payload.shape)
            except protocol.ProtocolError as exc:
                log.warning("ignored a frame: %s", exc)
                return None
            zoom = header.get("zoom")
            return Frame(int(header.get("id", 0)), str(header.get("label")), payload, now,
                         float(zoom) if isinstance(zoom, (int, float)) else None)
        if kind == protocol.ERROR:
            message = f"{header.get('code')}: {header.get('message')}"
            self.errors.append(message)
            del self.errors[:-20]
            log.warning("server refused a request: %s", message)
            if header.get("code") == "unknown_client":  # the server restarted and forgot us
                self._hello()
        return None

    def _follow_discovery(self) -> None:
        """The listed servers and those found on the network now: a new one is pinged from now on, one gone is
        dropped (and if it heard this kiosk, the least loaded other takes over, as from a silent one)."""
        found = self.discovery.found()
        for link in [link for link in self.links if link.address not in self.listed and link.address not in found]:
            log.info("server %s is gone from the network", link.address)
            self._close(link)
            self.links.remove(link)
            if link is self.active:
                self.active = None
        for address in found:
            if all(link.address != address for link in self.links):
                log.info("server %s found on the network", address)
                self.links.append(Link(address))
                self._connect(self.links[-1])

    def _keep_alive(self, now: float) -> None:
        if self.discovery is not None:
            self._follow_discovery()
        for link in self.links:
            silent_since = max(link.last_heard, link.connected_at)
            if link.hung_up or now - silent_since > SERVER_TIMEOUT_S:
                if link is self.active:
                    log.warning("server %s %s: reconnecting", link.address, "hung up" if link.hung_up else
                                f"silent for {now - silent_since:.1f} s")
                    self.active = None
                self._connect(link)  # lazy pirate: a fresh socket; it is pinged again below
            if now - link.last_ping >= PING_INTERVAL_S:
                link.last_ping = now
                self._send(protocol.encode(protocol.PING, t=time.time()), link)
                if link is self.active:
                    self._grant_credit()  # credit is stated, not added, so repeating it heals any lost message
        if self.active is None:
            self._choose(now)

    def _choose(self, now: float) -> None:
        """The least loaded server that answers (ties at random, so kiosks starting together spread out). At start
        the first answer waits FIRST_CHOICE_WAIT_S for the others, so a kiosk does not take the fastest by chance."""
        answering = [link for link in self.links if link.answering(now)]
        if not answering:
            return
        if not self._used_one and len(answering) < len(self.links) and now - self._first_answer < FIRST_CHOICE_WAIT_S:
            return
        least = min(link.load for link in answering)
        self._use(random.choice([link for link in answering if link.load == least]))

    def _grant_credit(self) -> None:
        self._send(protocol.encode(protocol.CREDIT, last_frame=self._last_frame, window=CREDIT_WINDOW))

    def close(self) -> None:
        for link in self.links:
            self._close(link)
