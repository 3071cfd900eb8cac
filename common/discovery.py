"""Servers found on the local network by DNS-SD over mDNS (`_hear-and-see._tcp`), instead of a list in the venue file.

A server started with `advertise` announces itself: its address and port, and in its TXT record the protocol
version and, when it has CurveZMQ keys, its public key's fingerprint. A kiosk whose venue lists `"mdns"` among its
servers browses for them and hands what it finds to its client (app/client.py), which pings them like any listed
server, adds them as they appear and drops them as they leave.

An announcement is anyone's to make on the network, so the kiosk trusts none of it: beyond loopback it takes only
a server whose fingerprint is that of the key it already has (`server_key`), and CurveZMQ's handshake then proves
the server holds that key; without a key it takes only servers on its own machine. A record it cannot use (bad TXT,
no IPv4 address, no port, another protocol version, a key not its own) is logged and skipped.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import socket
import threading
from urllib.parse import urlparse

from zeroconf import (InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf,
                      get_all_addresses)

from common.errors import UserError
from common.protocol import PROTOCOL_VERSION

SERVICE_TYPE = "_hear-and-see._tcp.local."
RESOLVE_TIMEOUT_MS = 3000

log = logging.getLogger("hear_and_see.discovery")


def fingerprint(public_key: bytes) -> str:
    """What a server's TXT record says of its CurveZMQ public key (Z85, as `hear-and-see keys` writes it): enough
    for a kiosk to tell its venue's servers from others; the handshake, not this, proves the key."""
    return hashlib.sha256(public_key).hexdigest()[:32]


class Advertisement:
    """This server on the local network until `close()`, which says goodbye so kiosks drop it at once."""

    def __init__(self, bound: str, public_key: bytes | None = None, name: str | None = None):
        url = urlparse(bound)
        if url.scheme != "tcp" or not url.port:
            raise UserError(f"only a tcp:// address can be advertised, not {bound}")
        try:
            host = ipaddress.ip_address(url.hostname or "")
        except ValueError:
            raise UserError(f"only a numeric IPv4 address can be advertised, not {bound}") from None
        if host.version != 4:
            raise UserError(f"only an IPv4 address can be advertised, not {bound}")
        if host.is_unspecified:  # bound to every interface: every address a kiosk could reach it at
            addresses = [a for a in get_all_addresses() if not ipaddress.ip_address(a).is_loopback]
        else:
            addresses = [str(host)]
        # A server bound to loopback is for kiosks on this machine alone: said on loopback, where no other hears it.
        interfaces = ["127.0.0.1"] if host.is_loopback else InterfaceChoice.All
        label = re.sub(r"[^A-Za-z0-9-]", "-", name or f"{socket.gethostname()}-{url.port}")[:63]
        properties = {"v": str(PROTOCOL_VERSION)}
        if public_key is not None:
            properties["key"] = fingerprint(public_key)
        self.info = ServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=url.port, properties=properties,
                                addresses=[socket.inet_aton(a) for a in addresses], server=f"{label}.local.")
        self.zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self.zeroconf.register_service(self.info, allow_name_change=True)
        log.info("advertised as %s (%s port %d)", self.info.name, ", ".join(addresses), url.port)

    def close(self) -> None:
        self.zeroconf.unregister_service(self.info)
        self.zeroconf.close()


def service_address(info, known_fingerprint: str | None) -> str:
    """The tcp:// address a kiosk may connect to for one resolved record, or ValueError saying why not.
    `known_fingerprint`: the fingerprint of the kiosk's `server_key`; None: it has none."""
    if info is None:
        raise ValueError("it did not answer")
    try:
        txt = {k.decode(): (v.decode() if v is not None else None) for k, v in (info.properties or {}).items()}
    except (AttributeError, UnicodeDecodeError):
        raise ValueError("its TXT record is malformed") from None
    if txt.get("v") != str(PROTOCOL_VERSION):
        raise ValueError(f"it speaks protocol version {txt.get('v')!r}, not {PROTOCOL_VERSION}")
    port = info.port
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"its port {port!r} is not one")
    hosts = []
    for text in info.parsed_addresses(IPVersion.V4Only):
        try:
            hosts.append(ipaddress.IPv4Address(text))
        except ValueError:
            pass
    if not hosts:
        raise ValueError("it gives no IPv4 address")
    host = hosts[0]
    key = txt.get("key")
    if known_fingerprint is not None:
        if key != known_fingerprint:
            raise ValueError("its key is not the one this kiosk knows (server_key)" if key else
                             "it has no CurveZMQ key, and this kiosk speaks to servers with its server_key only")
    elif not host.is_loopback:
        raise ValueError(f"it is beyond this machine ({host}) and this kiosk knows no server key (set server_key)")
    elif key is not None:
        raise ValueError("it needs CurveZMQ and this kiosk knows no server key (set server_key)")
    return f"tcp://{host}:{port}"


class Browser:
    """The servers DNS-SD finds now, as addresses (`found()`), kept up to date on zeroconf's own thread."""

    def __init__(self, known_fingerprint: str | None):
        self.known_fingerprint = known_fingerprint
        self._found: dict[str, str] = {}  # service name -> address
        self._lock = threading.Lock()
        self.zeroconf = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
        self.browser = ServiceBrowser(self.zeroconf, SERVICE_TYPE, handlers=[self._changed])

    def found(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(set(self._found.values())))

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        try:
            if state_change is ServiceStateChange.Removed:
                with self._lock:
                    gone = self._found.pop(name, None)
                if gone:
                    log.info("server %s (%s) left the network", name, gone)
                return
            info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
            try:
                address = service_address(info, self.known_fingerprint)
            except ValueError as exc:
                with self._lock:
                    self._found.pop(name, None)
                log.warning("skipped the server %s found on the network: %s", name, exc)
                return
            with self._lock:
                before, self._found[name] = self._found.get(name), address
            if before != address:
                log.info("found server %s at %s", name, address)
        except Exception:  # whatever the network says, the kiosk goes on with the servers it has
            log.exception("could not read the server %s found on the network", name)

    def close(self) -> None:
        self.browser.cancel()
        self.zeroconf.close()
