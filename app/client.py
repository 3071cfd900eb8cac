"""The app's side of the wire: a DEALER that sends windows, heartbeats, and frame credit, and reconnects by itself.

Liveness follows the ZeroMQ guide's heartbeating and lazy-pirate patterns: the client pings every
PING_INTERVAL_S, counts the server dead after SERVER_TIMEOUT_S of silence, then closes the socket and
opens a fresh one (so no stale request survives), re-sending HELLO until the server answers.
Frames are "latest wins": the server sends a frame only while fewer than CREDIT_WINDOW are unacknowledged
(credit-based flow control), and `poll` keeps only the newest of those that arrived.
"""
from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass

import numpy as np
import zmq

from common import protocol

PING_INTERVAL_S = 0.25
SERVER_TIMEOUT_S = 1.0
CREDIT_WINDOW = 2      # frames in flight: one being shown, one on its way

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


class InferenceClient:
    def __init__(self, address: str, name: str = "app", classes=None, context: zmq.Context | None = None,
                 server_key: bytes | None = None):
        self.address, self.name, self.classes = address, name, classes
        self.server_key = server_key
        self.ctx = context or zmq.Context.instance()
        self.socket = None
        self.alive = False              # has the server answered within SERVER_TIMEOUT_S?
        self.reconnects = 0
        self.errors: list[str] = []
        self.round_trip_ms: float | None = None  # the last heartbeat's, PING to PONG
        self._next_id = 0
        self._last_heard = 0.0
        self._last_ping = 0.0
        self._last_frame = 0            # id of the newest frame received: the server's credit is counted from it
        self._steering: dict | None = None  # what the app asked to be dreamt, re-sent to every server we reach
        self._connect()

    def _connect(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.reconnects += 1
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, f"{self.name}-{uuid.uuid4().hex[:8]}".encode())
        s.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES + 4096)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 8)
        if self.server_key is not None:
            s.curve_serverkey = self.server_key
            s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
        s.connect(self.address)
        self.socket = s
        self._last_frame = 0
        self._connected_at = time.monotonic()
        self._hello()

    def _hello(self) -> None:
        self._send(protocol.encode(protocol.HELLO, client=self.name, classes=self.classes, t=time.time()))
        if self._steering is not None:
            self._send(protocol.encode(protocol.STEER, **self._steering))

    def steer(self, dream_class: str | None, intensity: float, layer: str | None) -> None:
        """Ask the server to dream `dream_class` whatever is heard (None: what it hears), at `intensity`, on
        `layer` (None: the server's)."""
        self._steering = {"class": dream_class, "intensity": float(intensity), "layer": layer}
        self._send(protocol.encode(protocol.STEER, **self._steering))

    def _send(self, parts: list[bytes]) -> bool:
        try:
            self.socket.send_multipart(parts, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # SNDHWM messages already wait for a server that is away or not reading: drop this one
            return False

    def send_window(self, samples: np.ndarray, sample_rate: int) -> int | None:
        """Ask for one window to be classified; returns its request id, or None if it could not be sent."""
        if not self.alive:
            return None
        self._next_id += 1
        sent = self._send(protocol.encode(protocol.AUDIO, np.asarray(samples, dtype=np.float32),
                                          id=self._next_id, sample_rate=sample_rate))
        return self._next_id if sent else None

    def poll(self, timeout_ms: int = 0) -> tuple[list[Result], Frame | None]:
        """Results that arrived, and the newest frame (older ones are dropped unseen). Keeps the link alive."""
        now = time.monotonic()
        results, newest = [], None
        if self.socket.poll(timeout_ms, zmq.POLLIN):
            while True:
                try:
                    parts = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                message = self._receive(parts, now)
                if isinstance(message, Result):
                    results.append(message)
                elif isinstance(message, Frame):
                    newest = message
        self._keep_alive(now)
        return results, newest

    def _receive(self, parts: list[bytes], now: float):
        try:
            header, payload = protocol.decode(parts)
        except protocol.ProtocolError as exc:
            log.warning("ignored a malformed message from the server: %s", exc)
            return None
        self._last_heard = now
        if not self.alive:
            log.info("server %s is answering", self.address)
        self.alive = True
        kind = header["kind"]
        if kind == protocol.RESULT:
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

    def _keep_alive(self, now: float) -> None:
        silent_since = max(self._last_heard, self._connected_at)
        if now - silent_since > SERVER_TIMEOUT_S:
            if self.alive:
                log.warning("server %s silent for %.1f s: reconnecting", self.address, now - silent_since)
            self.alive = False
            self._connect()  # lazy pirate: a fresh socket, and HELLO again
            return
        if now - self._last_ping >= PING_INTERVAL_S:
            self._last_ping = now
            self._send(protocol.encode(protocol.PING, t=time.time()))
            self._grant_credit()  # credit is stated, not added, so repeating it heals any lost message

    def _grant_credit(self) -> None:
        self._send(protocol.encode(protocol.CREDIT, last_frame=self._last_frame, window=CREDIT_WINDOW))

    def close(self) -> None:
        self.socket.close(linger=0)
