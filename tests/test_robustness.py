"""Bad input at a live server: fuzzed frames, floods, and encryption. Each is answered with an error or
dropped, and the server keeps serving everyone else."""
from __future__ import annotations

import time

import msgpack
import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from app.client import InferenceClient
from common import protocol
from tests.conftest import RunningServer

FUZZ_CASES = 200  # benchmarks/fuzz_bench.py runs 10,000

header_values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                          st.text(max_size=12), st.binary(max_size=12),
                          st.lists(st.integers(-2**63, 2**64 - 1), max_size=4))
headers = st.dictionaries(st.sampled_from(["v", "kind", "dtype", "shape", "id", "sample_rate", "classes",
                                           "last_frame", "window", "client", "t", "label", "confidence", "kiosk"]),
                          header_values, max_size=8)
kinds = st.sampled_from(sorted(protocol.KINDS) + ["", "shutdown"])


@st.composite
def messages(draw):
    """Mostly well-formed-looking messages with one thing wrong, plus raw garbage."""
    if draw(st.booleans()):
        return draw(st.lists(st.binary(max_size=128), min_size=1, max_size=3))
    header = {"v": draw(st.sampled_from([1, 1, 1, 0, 2, "1"])), "kind": draw(kinds), **draw(headers)}
    parts = [msgpack.packb(header)]
    if draw(st.booleans()):
        parts.append(draw(st.binary(max_size=512)))
    return parts


def fuzz(address, cases):
    """Send `cases` fuzzed messages; the server must stay up for a second, honest client. Each message
    waits for its answer (or 50 ms), and a fresh identity says HELLO every 100 messages, so the fuzz
    reaches the decoder rather than the rate limiter."""
    ctx = zmq.Context()
    sock = None

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(messages())
    def send(parts):
        nonlocal sock
        if send.count % 100 == 0:
            if sock is not None:
                sock.close()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
            sock.send_multipart(protocol.encode(protocol.HELLO, client="fuzzer"))
        send.count += 1
        sock.send_multipart(parts)
        if sock.poll(50):
            while sock.poll(0):
                sock.recv_multipart()
    send.count = 0
    try:
        send()
    finally:
        if sock is not None:
            sock.close()
        ctx.term()


def test_fuzzed_messages_never_stop_the_server(networks, seeds, address):
    server = RunningServer(networks, seeds, address)
    try:
        fuzz(address, FUZZ_CASES)
        client = InferenceClient(address, "honest")
        deadline = time.monotonic() + 20
        results = []
        while not results and time.monotonic() < deadline:
            if client.alive:
                client.send_window(np.zeros(16000, np.float32) + 0.1, 16000)
            results, _ = client.poll(200)
        client.close()
        assert results, "the server stopped answering after the fuzzing"
        assert server.thread.is_alive() and server.server.stats["errors"] > FUZZ_CASES // 4
    finally:
        server.close()


def test_a_flood_is_rate_limited_and_others_are_still_served(running, address):
    ctx = zmq.Context()
    flood = ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(address)
    flood.send_multipart(protocol.encode(protocol.HELLO, client="flood"))
    for _ in range(3000):
        flood.send_multipart(protocol.encode(protocol.PING, t=0))
    client = InferenceClient(address, "honest")
    deadline, results = time.monotonic() + 20, []
    while not results and time.monotonic() < deadline:
        if client.alive:
            client.send_window(np.full(16000, 0.1, np.float32), 16000)
        results, _ = client.poll(200)
    client.close()
    pongs = 0
    # Wait until the server has taken every flood message (a loaded CI box can still be reading them), not for a
    # pause in the answers.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if flood.poll(500):
            pongs += protocol.decode(flood.recv_multipart())[0]["kind"] == protocol.PONG
        elif pongs - 1 + running.server.stats["dropped"] >= 3000:
            break
    flood.close()
    ctx.term()
    assert results, "the honest client was not served during the flood"
    # Every flood message was either answered or dropped, and many were dropped.
    assert pongs - 1 + running.server.stats["dropped"] == 3000 and pongs < 2500


def test_curve_encryption_admits_only_clients_with_the_server_key(networks, seeds, address, tmp_path):
    import zmq.auth

    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "server")
    server_public, server_secret = zmq.auth.load_certificate(secret_file)
    server = RunningServer(networks, seeds, address, curve_secret_key=server_secret)
    try:
        keyed = InferenceClient(address, "keyed", server_key=server_public)
        stranger = InferenceClient(address, "stranger", server_key=zmq.curve_keypair()[0])
        plain = InferenceClient(address, "plain")
        deadline = time.monotonic() + 10
        while not keyed.alive and time.monotonic() < deadline:
            for c in (keyed, stranger, plain):
                c.poll(50)
        for c in (stranger, plain):
            c.poll(200)
        assert keyed.alive and not stranger.alive and not plain.alive
        for c in (keyed, stranger, plain):
            c.close()
    finally:
        server.close()


def test_a_server_with_kiosk_keys_admits_the_venues_kiosks_alone(networks, seeds, address, tmp_path):
    """`hear-and-see keys --kiosks 2` makes the venue's keys; a server given the kiosks' folder serves a kiosk with
    one of them, and not a kiosk that knows the server's key but brings a key of its own."""
    import zmq.auth

    from app.cli import main

    assert main(["keys", str(tmp_path), "--kiosks", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "kiosks").iterdir()) == ["kiosk-1.key", "kiosk-2.key"]  # no secrets
    server_public, server_secret = zmq.auth.load_certificate(tmp_path / "server.key_secret")
    server = RunningServer(networks, seeds, address, curve_secret_key=server_secret, kiosk_keys=tmp_path / "kiosks")
    try:
        venue_kiosk = InferenceClient(address, "kiosk", server_key=server_public,
                                      kiosk_key=zmq.auth.load_certificate(tmp_path / "kiosk_secrets/kiosk-2.key_secret"))
        outsider = InferenceClient(address, "outsider", server_key=server_public, kiosk_key=zmq.curve_keypair())
        deadline = time.monotonic() + 10
        while not venue_kiosk.alive and time.monotonic() < deadline:
            for c in (venue_kiosk, outsider):
                c.poll(50)
        outsider.poll(300)
        assert venue_kiosk.alive and not outsider.alive
        assert [s.name for s in server.server.sessions.values()] == ["kiosk"]
        for c in (venue_kiosk, outsider):
            c.close()
    finally:
        server.close()
