"""The console's password, stored as a salted scrypt hash (hashlib's, from OpenSSL) in the venue file.

Format: "scrypt$N$r$p$SALT$HASH" (base64), so the cost can be raised later without breaking old hashes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2 ** 14, 8, 1   # OWASP's scrypt minimum; about 50 ms here, so guessing is slow and a login is not
MIN_LENGTH = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"the password must have at least {MIN_LENGTH} characters")
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def _parts(stored) -> tuple[int, int, int, bytes, bytes] | None:
    if not isinstance(stored, str):
        return None
    fields = stored.split("$")
    if len(fields) != 6 or fields[0] != "scrypt":
        return None
    try:
        n, r, p = map(int, fields[1:4])
        salt, digest = base64.b64decode(fields[4], validate=True), base64.b64decode(fields[5], validate=True)
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or not (0 < r <= 64 and 0 < p <= 16) or len(salt) < 8 or len(digest) < 16:
        return None
    return n, r, p, salt, digest


def is_password_hash(stored) -> bool:
    return _parts(stored) is not None


def check_password(password: str, stored: str) -> bool:
    parts = _parts(stored)
    if parts is None:
        return False
    n, r, p, salt, digest = parts
    attempt = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2 ** 26)
    return hmac.compare_digest(attempt, digest)
