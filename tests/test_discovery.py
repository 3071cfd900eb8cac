"""Servers found on the local network (DNS-SD over mDNS): what a kiosk takes from a record and what it refuses, a real
announcement found and lost on this machine's network, and the client following what is found (servers added as they
appear, dropped as they go, the kiosk handed over to another with its picture)."""
from __future__ import annotations

import logging
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import zmq
from zeroconf import IPVersion

from app.client import InferenceClient
from common.discovery import Advertisement, Browser, fingerprint, service_address
from common.errors import UserError
from tests.conftest import RunningServer, wait_until

OUR_KEY, OTHER_KEY = zmq.curve_keypair()[0], zmq.curve_keypair()[0]


def record(addresses=("127.0.0.1",), port=5555, **txt):
    """A resolved record as zeroconf's ServiceInfo gives it: the boundary the kiosk reads."""
    properties = {b"v": b"1", **{k.encode(): v for k, v in txt.items()}}
    return SimpleNamespace(port=port, properties=properties,
                           parsed_addresses=lambda version=IPVersion.V4Only: list(addresses))


def test_a_record_gives_the_address_a_kiosk_may_connect_to():
    assert service_address(record(), None) == "tcp://127.0.0.1:5555"
    assert service_address(record(["10.0.0.11"], key=fingerprint(OUR_KEY).encode()),
                           fingerprint(OUR_KEY)) == "tcp://10.0.0.11:5555"


# One test per bad record: each is skipped with its reason, none raises anything but ValueError.
BAD_RECORDS = [
    (None, None, "did not answer"),
    (SimpleNamespace(port=5555, properties={b"v": b"\xff\xfe"}, parsed_addresses=lambda version=None: ["127.0.0.1"]),
     None, "malformed"),
    (SimpleNamespace(port=5555, properties=[b"v=1"], parsed_addresses=lambda version=None: ["127.0.0.1"]),
     None, "malformed"),
    (record(v=b"2"), None, "protocol version"),
    (SimpleNamespace(port=5555, properties={}, parsed_addresses=lambda version=None: ["127.0.0.1"]), None,
     "protocol version"),
    (record(port=0), None, "port"),
    (record(port=None), None, "port"),
    (record(addresses=()), None, "no IPv4"),
    (record(addresses=("ipc:///tmp/server", "tcp://127.0.0.1:5555")), None, "no IPv4"),
    (record(addresses=("::1",)), None, "no IPv4"),
]


@pytest.mark.parametrize("info, known, reason", BAD_RECORDS)
def test_a_record_a_kiosk_cannot_use_is_refused_with_its_reason(info, known, reason):
    with pytest.raises(ValueError, match=reason):
        service_address(info, known)


def test_a_kiosk_never_takes_a_server_beyond_loopback_whose_key_it_does_not_know():
    with pytest.raises(ValueError, match="beyond this machine"):
        service_address(record(["10.0.0.11"]), None)  # no key of its own: loopback only
    with pytest.raises(ValueError, match="beyond this machine"):
        service_address(record(["10.0.0.11"], key=fingerprint(OUR_KEY).encode()), None)
    with pytest.raises(ValueError, match="not the one this kiosk knows"):
        service_address(record(["10.0.0.11"], key=fingerprint(OTHER_KEY).encode()), fingerprint(OUR_KEY))
    with pytest.raises(ValueError, match="no CurveZMQ key"):
        service_address(record(["10.0.0.11"]), fingerprint(OUR_KEY))
    with pytest.raises(ValueError, match="no CurveZMQ key"):
        service_address(record(["127.0.0.1"], key=None), fingerprint(OUR_KEY))
    with pytest.raises(ValueError, match="needs CurveZMQ"):  # it would refuse the kiosk's plain connection anyway
        service_address(record(["127.0.0.1"], key=fingerprint(OUR_KEY).encode()), None)


def test_only_a_numeric_tcp_ipv4_address_is_advertised():
    for bound in ("ipc:///tmp/server", "tcp://[::1]:5555", "tcp://localhost:5555"):
        with pytest.raises(UserError, match="advertised"):
            Advertisement(bound)


def test_an_advertised_server_is_found_and_dropped_when_it_says_goodbye():
    """Real multicast on this machine: an announcement on loopback, browsed on every interface as a kiosk does. The
    ports are made up: other venues' servers on the same network may be found too, so only ours are asserted."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    ours, theirs = Advertisement("tcp://127.0.0.1:40001", OUR_KEY, name=name), None
    browser = Browser(fingerprint(OUR_KEY))
    try:
        wait_until("our server to be found", browser.found, lambda found: "tcp://127.0.0.1:40001" in found,
                   timeout=15, interval=0.1)
        theirs = Advertisement("tcp://127.0.0.1:40002", OTHER_KEY, name=f"{name}-other")
        keyless = Advertisement("tcp://127.0.0.1:40003", name=f"{name}-keyless")
        time.sleep(3.0)  # both announced and resolved many times over: neither is taken
        assert not {"tcp://127.0.0.1:40002", "tcp://127.0.0.1:40003"} & set(browser.found())
        keyless.close()
        ours.close()
        ours = None
        wait_until("our server to be dropped", browser.found, lambda found: "tcp://127.0.0.1:40001" not in found,
                   timeout=15, interval=0.1)
    finally:
        for advertisement in (ours, theirs):
            if advertisement is not None:
                advertisement.close()
        browser.close()


class Found:
    """What a Browser has found, set by the test (the client reads `found()` only)."""

    def __init__(self):
        self.addresses: tuple[str, ...] = ()

    def found(self):
        return self.addresses


def _drive(client, until, timeout=30):
    """Poll as the app does, a window every half second, until `until()`."""
    t = np.arange(64000) / 16000
    window, next_send = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 0.0
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        if time.monotonic() >= next_send:
            next_send = time.monotonic() + 0.5
            client.send_window(window, 16000)
        _, frame = client.poll(50)
        if frame is not None:
            client.shown(frame)


def test_the_client_takes_servers_as_they_are_found_and_leaves_them_as_they_go(networks, seeds, caplog):
    from app.client import free_tcp_address

    first, second = free_tcp_address(), free_tcp_address()
    servers = [RunningServer(networks, seeds, first), RunningServer(networks, seeds, second)]
    found = Found()
    client = InferenceClient([], name="kiosk", discovery=found)
    try:
        client.poll(0)
        assert not client.alive and client.links == []  # nothing found yet: the fallback, and nothing to ping
        found.addresses = (first,)
        _drive(client, lambda: client.alive and client.address == first)
        found.addresses = (first, second)
        client.poll(0)
        assert [link.address for link in client.links] == [first, second] and client.address == first
        _drive(client, lambda: client._on_screen is not None)  # a live frame shown: what the next server dreams on
        with caplog.at_level(logging.INFO, logger="hear_and_see.server"):
            found.addresses = (second,)  # the first left the network (its goodbye)
            client.poll(0)
            assert [link.address for link in client.links] == [second]
            _drive(client, lambda: client.alive and client.address == second)
            wait_until("the second server to be handed the picture on screen",
                       lambda: "handed over its" in caplog.text)
        assert client.switches == 1
    finally:
        client.close()
        for server in servers:
            server.close()
