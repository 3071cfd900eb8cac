"""The inference server and the app's client over real TCP sockets on 127.0.0.1, with the real
classifier (random-init EfficientNet-Lite0, fast to build) and the real dream engine at a small size."""
from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from app.client import InferenceClient
from common.errors import UserError
from common import protocol
from common.protocol import is_loopback
from inference_server.server import DreamSettings, InferenceServer, Session
from models.classes import ESC50_CLASSES
from models.dream import ASPECT
from models.gate import GateSettings, OpenSetGate
from tests.conftest import DREAM_SIZE, RunningServer, wait_until

DREAM_SHAPE = (DREAM_SIZE, round(DREAM_SIZE * ASPECT), 3)  # the dream is made at the screen's aspect


@pytest.fixture
def dealer(address):
    ctx = zmq.Context()
    sockets = []

    def connect():
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(address)
        sockets.append(s)
        return s
    yield connect
    for s in sockets:
        s.close()
    ctx.term()


def ask(sock, parts, timeout_ms=20000):
    sock.send_multipart(parts)
    assert sock.poll(timeout_ms), "the server did not answer"
    return protocol.decode(sock.recv_multipart())


def window(seconds=4.0, amplitude=0.3):
    t = np.arange(int(16000 * seconds)) / 16000
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_classifies_a_window_and_streams_frames_against_credit(running, dealer):
    sock = dealer()
    header, _ = ask(sock, protocol.encode(protocol.HELLO, client="t"))
    assert header["kind"] == protocol.PONG
    header, _ = ask(sock, protocol.encode(protocol.AUDIO, window(), id=3, sample_rate=16000))
    assert header["kind"] == protocol.RESULT and header["id"] == 3 and header["trained"] is False
    assert header["label"] in ESC50_CLASSES and len(header["top"]) == 5
    heard = header["label"]
    assert abs(header["dbfs"] - 20 * np.log10(0.3 / np.sqrt(2))) < 0.5
    header, image = ask(sock, protocol.encode(protocol.CREDIT, last_frame=0, window=1))
    assert header["kind"] == protocol.FRAME and header["id"] == 1 and header["label"] == heard
    assert image.shape == DREAM_SHAPE and 5 < image.mean() < 250


def test_restricted_class_set_answers_only_from_that_set(running, dealer):
    sock = dealer()
    ask(sock, protocol.encode(protocol.HELLO, client="toy", classes="animals"))
    header, _ = ask(sock, protocol.encode(protocol.AUDIO, window(), id=1, sample_rate=16000))
    assert header["label"] in ESC50_CLASSES[:10]
    assert abs(sum(p for _, p in header["top"]) - 1.0) < 0.5 and all(c in ESC50_CLASSES[:10] for c, _ in header["top"])


BAD = [
    ([b"\xc1"], "bad_header"),
    ([msgpack.packb({"v": 2, "kind": "ping"})], "bad_version"),
    (protocol.encode(protocol.AUDIO, np.zeros(100, np.float32), id=1, sample_rate=44100), "bad_rate"),
    (protocol.encode(protocol.AUDIO, np.full(100, np.nan, np.float32), id=1, sample_rate=16000), "bad_samples"),
    ([msgpack.packb({"v": 1, "kind": "audio", "dtype": "<f4", "shape": [9], "sample_rate": 16000}), b"\0" * 8],
     "bad_shape"),
    ([msgpack.packb({"v": 1, "kind": "audio", "dtype": "<i2", "shape": [4], "sample_rate": 16000}), b"\0" * 8],
     "bad_dtype"),
    ([msgpack.packb({"v": 1, "kind": "credit", "last_frame": "x", "window": 1})], "bad_field"),
    (protocol.encode(protocol.RESULT, id=1), "bad_kind"),
    ([msgpack.packb({"v": 1, "kind": "hello", "classes": "dragons"})], "bad_classes"),
    # hand-offs: the picture a kiosk brings to a new server
    (protocol.encode(protocol.IMAGE, np.zeros((64, 64), np.uint8), label="dog"), "bad_shape"),
    (protocol.encode(protocol.IMAGE, np.zeros((64, 64, 4), np.uint8), label="dog"), "bad_shape"),
    (protocol.encode(protocol.IMAGE, np.zeros((8, 64, 3), np.uint8), label="dog"), "bad_shape"),
    (protocol.encode(protocol.IMAGE, np.zeros((64, 64, 3), np.uint8), label="dragon"), "bad_field"),
    (protocol.encode(protocol.IMAGE, np.zeros((64, 64, 3), np.uint8)), "bad_field"),
    (protocol.encode(protocol.IMAGE, np.zeros((64, 64, 3), np.uint8), label="dog", confidence=float("nan")), "bad_field"),
    (protocol.encode(protocol.IMAGE, np.zeros((64, 64, 3), np.uint8), label="dog", confidence=True), "bad_field"),
    ([msgpack.packb({"v": 1, "kind": "image", "dtype": "<f4", "shape": [4, 4, 3], "label": "dog"}), b"\0" * 192],
     "bad_dtype"),
    ([msgpack.packb({"v": 1, "kind": "image", "dtype": "|u1", "shape": [64, 64, 3], "label": "dog"}), b"\0" * 10],
     "bad_shape"),
]


def test_bad_messages_get_errors_and_everyone_else_is_still_served(running, dealer):
    bad, good = dealer(), dealer()
    ask(good, protocol.encode(protocol.HELLO, client="good"))
    header, _ = ask(bad, protocol.encode(protocol.CREDIT, last_frame=0, window=2))
    assert (header["kind"], header["code"]) == (protocol.ERROR, "unknown_client")
    header, _ = ask(bad, protocol.encode(protocol.PING, t=1))  # a ping is a load probe: any kiosk may ask
    assert header["kind"] == protocol.PONG and (header["kiosks"], header["load"]) == (1, 1.0)
    ask(bad, protocol.encode(protocol.HELLO, client="bad"))
    for parts, code in BAD:
        header, _ = ask(bad, parts)
        assert (header["kind"], header["code"]) == (protocol.ERROR, code), parts
    bad.send(b"")  # an empty message: answered or dropped, never fatal
    header, _ = ask(good, protocol.encode(protocol.AUDIO, window(), id=9, sample_rate=16000))
    assert header["kind"] == protocol.RESULT and header["id"] == 9
    assert running.thread.is_alive() and running.server.stats["errors"] >= len(BAD) + 1


def test_a_handed_over_picture_is_where_the_dream_goes_on(running, dealer):
    sock = dealer()
    ask(sock, protocol.encode(protocol.HELLO, client="kiosk", classes=["dog", "rooster"]))
    picture = np.zeros((DREAM_SIZE, DREAM_SIZE * 16 // 9, 3), np.uint8)
    picture[:, : picture.shape[1] // 2] = 255  # nothing like a seed: half white, half black
    sock.send_multipart(protocol.encode(protocol.IMAGE, picture, label="dog", confidence=0.8))
    header, _ = ask(sock, protocol.encode(protocol.PING, t=1))  # answered in order: the image was taken first
    assert header["kind"] == protocol.PONG
    session = next(iter(running.server.sessions.values()))
    assert session.what_to_dream() == ("dog", 0.8)  # dreamt at once, as strongly as the old server did
    engine = session.engine
    assert engine.current_seed == "dog"
    dreamt_from = engine.image.squeeze(0).mean(0)  # (H, W) in [0, 1]
    half = dreamt_from.shape[1] // 2
    assert dreamt_from[:, :half - 2].mean() > 0.95 and dreamt_from[:, half + 2:].mean() < 0.05


def test_oversized_message_is_dropped_by_zeromq_and_the_server_lives(running, dealer):
    sock = dealer()
    ask(sock, protocol.encode(protocol.HELLO, client="big"))
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        sock.send_multipart([msgpack.packb({"v": 1, "kind": "audio"}), b"\0" * (protocol.MAX_MESSAGE_BYTES + 8192)])
        # ZeroMQ drops a message over the limit by closing the connection it came on: then it has been dropped.
        assert monitor.poll(20000), "the connection the oversized message came on was never closed"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    finally:
        sock.disable_monitor()
        monitor.close()
    fresh = dealer()
    header, _ = ask(fresh, protocol.encode(protocol.HELLO, client="after"))
    assert header["kind"] == protocol.PONG and running.thread.is_alive()


def test_frames_are_latest_wins_not_a_queue(running, dealer):
    """A client that stops reading holds at most `window` frames in flight, whatever the TCP buffers hold."""
    sock = dealer()
    ask(sock, protocol.encode(protocol.HELLO, client="slow"))
    ask(sock, protocol.encode(protocol.AUDIO, window(), id=1, sample_rate=16000))
    sock.send_multipart(protocol.encode(protocol.CREDIT, last_frame=0, window=2))
    slow = _frame_collector(sock)

    def still_there(observe):  # the slow client pings, as the app does, so the server does not forget it
        return lambda: (sock.send_multipart(protocol.encode(protocol.PING, t=0)), observe())[1]
    wait_until("the slow client's frames", still_there(slow), lambda ids: len(ids) >= 2, timeout=30, interval=0.2)
    # Time for many keyframes, counted in keyframes: a second client is dreamt for in turn with every client
    # that has credit, so once it has three frames the slow one, had it still been owed any, would have had more.
    witness = dealer()
    ask(witness, protocol.encode(protocol.HELLO, client="witness"))
    ask(witness, protocol.encode(protocol.AUDIO, window(), id=1, sample_rate=16000))
    witness.send_multipart(protocol.encode(protocol.CREDIT, last_frame=0, window=3))
    wait_until("three frames for a second client", still_there(_frame_collector(witness)),
               lambda ids: len(ids) >= 3, timeout=30, interval=0.2)
    assert slow(wait_ms=200) == [1, 2]
    assert [s.frames_sent for s in running.server.sessions.values() if s.name == "slow"] == [2]


def _frame_collector(sock):
    """For wait_until: the ids of every frame `sock` has been sent so far, reading what has come in (after
    waiting `wait_ms` for each next message)."""
    ids = []

    def collect(wait_ms: int = 0) -> list[int]:
        while sock.poll(wait_ms):
            header, _ = protocol.decode(sock.recv_multipart())
            if header["kind"] == protocol.FRAME:
                ids.append(header["id"])
        return list(ids)
    return collect


def test_client_gets_results_and_frames_and_recovers_from_a_server_restart(networks, seeds, address, caplog):
    server = RunningServer(networks, seeds, address)
    client = InferenceClient(address, name="app")
    try:
        result, frame = _until_frame(client, timeout=20)
        assert result is not None and frame is not None and frame.image.shape == DREAM_SHAPE
        server.close()
        lost_at = time.monotonic()
        while client.alive and time.monotonic() - lost_at < 5:
            client.poll(50)
        assert not client.alive and time.monotonic() - lost_at < 2.0
        assert "hung up" in caplog.text  # the closed connection said so, before the heartbeat's timeout could
        server = RunningServer(networks, seeds, address)
        back_at = time.monotonic()
        while not client.alive and time.monotonic() - back_at < 10:
            client.poll(50)
        assert client.alive  # heard again, on a fresh socket or on the old one's reconnection
        result, frame = _until_frame(client, timeout=20)
        assert result is not None and frame is not None
    finally:
        client.close()
        server.close()


def _until_frame(client, timeout):
    deadline, result, frame = time.monotonic() + timeout, None, None
    next_send = 0.0
    while time.monotonic() < deadline and (result is None or frame is None):
        if time.monotonic() >= next_send:
            next_send = time.monotonic() + 0.5
            client.send_window(window(), 16000)
        results, newest = client.poll(50)
        result = results[-1] if results else result
        frame = newest or frame
    return result, frame


def test_binding_beyond_loopback_needs_keys(networks, seeds):
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://localhost:1") and is_loopback("ipc:///tmp/x")
    assert not is_loopback("tcp://*:5555") and not is_loopback("tcp://0.0.0.0:5555")
    with pytest.raises(UserError, match="CurveZMQ"):
        InferenceServer(*networks, seeds, "tcp://0.0.0.0:0")


def test_a_performer_steers_the_dream_class_intensity_and_layer(running, dealer):
    sock = dealer()
    ask(sock, protocol.encode(protocol.HELLO, client="stage", classes="animals"))
    for fields, code in [({"class": "helicopter"}, "bad_field"), ({"intensity": 2.0}, "bad_field"),
                         ({"intensity": True}, "bad_field"), ({"layer": "fc"}, "bad_field")]:
        header, _ = ask(sock, protocol.encode(protocol.STEER, **fields))
        assert (header["kind"], header["code"]) == (protocol.ERROR, code), fields
    # Nothing heard yet, but the class asked for is dreamt at once, on the layer asked for.
    sock.send_multipart(protocol.encode(protocol.STEER, **{"class": "cow", "intensity": 0.5, "layer": "blocks.3"}))
    header, image = ask(sock, protocol.encode(protocol.CREDIT, last_frame=0, window=1))
    assert header["kind"] == protocol.FRAME and header["label"] == "cow" and image.shape[2] == 3
    session = next(iter(running.server.sessions.values()))
    assert (session.asked_class, session.intensity, session.engine.layer) == ("cow", 0.5, "blocks.3")

    # A layer change goes on from the picture on screen; it does not jump back to the seed image.
    first = image
    for _ in range(4):
        header, image = ask(sock, protocol.encode(protocol.CREDIT, last_frame=header["id"], window=1))
    sock.send_multipart(protocol.encode(protocol.STEER, **{"class": "cow", "intensity": 0.5, "layer": "blocks.5"}))
    header, after = ask(sock, protocol.encode(protocol.CREDIT, last_frame=header["id"], window=1))
    assert session.engine.layer == "blocks.5"
    to_before, to_start = (np.abs(after.astype(float) - x).mean() for x in (image, first))
    assert to_before < to_start, (to_before, to_start)


def test_the_server_dreams_the_class_the_client_asks_for_else_what_its_gate_shows():
    session = Session("app", OpenSetGate(GateSettings(), class_names=ESC50_CLASSES), label="dog", confidence=0.7)
    assert session.what_to_dream() == ("dog", 0.7)
    session.asked_class = "cow"
    assert session.what_to_dream() == ("cow", 1.0)  # chosen, not heard: full strength
    session.asked_class, session.label = None, None
    assert session.what_to_dream() == (None, 0.7)  # nothing asked for, nothing shown: nothing to dream


def test_a_missing_seed_image_costs_frames_not_the_server(networks, address, tmp_path, dealer, caplog):
    (tmp_path / "cow").mkdir()  # a class folder with no picture in it
    server = RunningServer(networks, tmp_path, address)
    try:
        sock = dealer()
        ask(sock, protocol.encode(protocol.HELLO, client="stage"))
        sock.send_multipart(protocol.encode(protocol.STEER, **{"class": "cow", "intensity": 1.0, "layer": None}))
        sock.send_multipart(protocol.encode(protocol.CREDIT, last_frame=0, window=2))
        wait_until("the server to try the seed image", lambda: caplog.text.count("no seed image for class 'cow'"))
        assert not sock.poll(1500), "a frame came without a seed image"
        assert caplog.text.count("no seed image for class 'cow'") == 1 and "seeds generate" in caplog.text
        header, _ = ask(sock, protocol.encode(protocol.AUDIO, window(), id=5, sample_rate=16000))
        assert header["kind"] == protocol.RESULT and header["id"] == 5
    finally:
        server.close()


# --- an overloaded server degrades instead of queueing ---------------------------------------------------------------
@pytest.fixture
def bare_server(networks, seeds):
    """A server whose loop the test turns by hand: `handle` is the loop's one entrance, `_hear_windows` its hearing."""
    server = InferenceServer(*networks, seeds, "tcp://127.0.0.1:0", context=zmq.Context(),
                             gate=GateSettings(silence_dbfs=-200, min_confidence=0.0, enter_windows=1),
                             dream=DreamSettings(size=DREAM_SIZE))
    yield server
    server.close()
    server.ctx.destroy(linger=0)


def _kiosks(server, classes):
    """A socket per class set, each said HELLO on; returns (identity, socket) pairs."""
    kiosks = []
    for k, class_set in enumerate(classes):
        sock = server.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, f"kiosk{k}".encode())
        sock.connect(server.address)
        sock.send_multipart(protocol.encode(protocol.HELLO, client=f"kiosk{k}", classes=class_set))
        kiosks.append((f"kiosk{k}".encode(), sock))
    wait_until("every kiosk's HELLO", lambda: server._drain() or len(server.sessions), lambda n: n == len(classes))
    for _, sock in kiosks:
        assert sock.poll(5000)
        sock.recv_multipart()  # HELLO's PONG
    return kiosks


def _received(sock) -> list[dict]:
    got = []
    while sock.poll(1000):
        got.append(protocol.decode(sock.recv_multipart())[0])
    return got


def test_a_kiosks_waiting_windows_are_answered_with_its_newest_windows_result_and_never_mixed(bare_server):
    server = bare_server
    (a, sock_a), (b, sock_b) = _kiosks(server, [["dog", "rooster"], ["pig", "cow"]])
    passes = []
    server._hear = lambda windows, hear=server._hear: passes.append(len(windows)) or hear(windows)
    # As the loop finds them after a busy moment: three windows of A and two of B, each louder than the last
    for request_id, amplitude in [(1, 0.01), (2, 0.02), (3, 0.04)]:
        server.handle(a, protocol.encode(protocol.AUDIO, window(amplitude=amplitude), id=request_id, sample_rate=16000))
    for request_id, amplitude in [(11, 0.1), (12, 0.2)]:
        server.handle(b, protocol.encode(protocol.AUDIO, window(amplitude=amplitude), id=request_id, sample_rate=16000))
    server._hear_windows()
    assert passes == [1, 1]  # each kiosk's newest window heard, once
    assert server.stats["conflated"] == 3 and server.stats["windows"] == 2
    for sock, ids, amplitude, classes in [(sock_a, [1, 2, 3], 0.04, {"dog", "rooster"}),
                                          (sock_b, [11, 12], 0.2, {"pig", "cow"})]:
        answers = _received(sock)
        assert [h["id"] for h in answers] == ids  # every window answered, in the order sent
        assert all(h["kind"] == protocol.RESULT and h["heard_id"] == ids[-1] for h in answers)
        assert all(abs(h["dbfs"] - 20 * np.log10(amplitude / np.sqrt(2))) < 0.5 for h in answers)  # its newest
        assert all({h["label"], *(c for c, _ in h["top"])} <= classes for h in answers)  # its own classes only
        assert len({(h["label"], h["confidence"], str(h["top"])) for h in answers}) == 1


def test_a_kiosk_flooding_windows_cannot_starve_another(running, dealer):
    rogue, kiosk = dealer(), dealer()
    ask(rogue, protocol.encode(protocol.HELLO, client="rogue"))
    ask(kiosk, protocol.encode(protocol.HELLO, client="kiosk"))
    wave = window()
    for request_id in range(150):  # within the rate limit's burst: every one is taken, and answered
        rogue.send_multipart(protocol.encode(protocol.AUDIO, wave, id=request_id, sample_rate=16000))
    header, _ = ask(kiosk, protocol.encode(protocol.AUDIO, window(), id=7, sample_rate=16000))
    assert header["kind"] == protocol.RESULT and header["id"] == 7 and header["heard_id"] == 7
    ids = []
    wait_until("an answer to each of the rogue's windows", lambda: ids.extend(
        h["id"] for h in _received(rogue) if h["kind"] == protocol.RESULT) or len(ids), lambda n: n >= 150,
        timeout=60, interval=0.2)
    assert sorted(ids) == list(range(150))
    # The rogue's windows waiting together were heard as one: its flood did not take the server's time
    assert running.server.stats["windows"] + running.server.stats["conflated"] == 151
    assert running.server.stats["windows"] < 30


def test_over_budget_each_kiosk_is_heard_every_nth_window_and_the_pong_says_so(bare_server):
    server = bare_server
    (a, sock), = _kiosks(server, [None])
    server._hearing_s, server._budget_at = 0.9, time.monotonic() - 1.0  # hearing took 90 % of the last second
    server._rebudget()
    assert server.hear_every == 2
    for request_id in range(1, 6):
        server.handle(a, protocol.encode(protocol.AUDIO, window(amplitude=0.01 * request_id), id=request_id,
                                         sample_rate=16000))
        server._hear_windows()
    answers = _received(sock)
    assert [(h["id"], h["heard_id"]) for h in answers] == [(1, 1), (2, 2), (3, 2), (4, 4), (5, 4)]
    assert server.stats["skipped"] == 2
    server.handle(a, protocol.encode(protocol.PING, t=1.0))
    assert _received(sock)[0]["hears_every"] == 2
    server._hearing_s, server._budget_at = 0.1, time.monotonic() - 1.0  # all of them would take 20 %: back to all
    server._rebudget()
    assert server.hear_every == 1


def test_kiosks_handed_over_get_a_short_first_keyframe_together_before_windows_are_heard(bare_server):
    from models.dream import OCTAVES

    server = bare_server
    kiosks = _kiosks(server, [["dog", "rooster"], ["pig", "cow"], None])
    picture = np.full((DREAM_SIZE, DREAM_SIZE * 16 // 9, 3), 128, np.uint8)
    for (identity, _), label in zip(kiosks[:2], ["dog", "pig"]):
        server.handle(identity, protocol.encode(protocol.IMAGE, picture, label=label, confidence=0.9))
        server.handle(identity, protocol.encode(protocol.CREDIT, last_frame=0, window=2))
    server.handle(kiosks[2][0], protocol.encode(protocol.AUDIO, window(), id=1, sample_rate=16000))
    assert server._handing_over()  # the window waits for the handed-over kiosks' first frames
    while any(s.handed_over for s in server.sessions.values()):
        server._dream_step()
    assert server.stats["dream_steps"] == OCTAVES and server.stats["dream_images"] == 2 * OCTAVES
    assert not server._handing_over() and server._windows
    for _, sock in kiosks[:2]:
        assert [h["kind"] for h in _received(sock)] == [protocol.FRAME]
