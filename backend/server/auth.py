"""Passwords and bearer tokens.

Passwords are stored as ``scrypt$N$r$p$salt_hex$hash_hex`` (RFC 7914, from the
standard library): memory-hard, salted, and verified in constant time. A login for an
unknown user still spends one derivation, so timing does not tell who exists.

Bearer tokens are 256 random bits (``secrets``), given to a device once; the server
keeps only their SHA-256, with the device name and an expiry that use renews.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$" + "00" * 16 + "$" + "00" * 32

DEFAULT_TOKEN_TTL = 30 * 24 * 3600
"""A token's life from its last renewal (``backend.server.accounts``): use renews it."""


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**26)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches; ``stored=None`` (no such user) spends the same time."""
    scheme, n, r, p, salt, digest = (stored or _DUMMY).split("$")
    if scheme != "scrypt":
        return False
    actual = _derive(password, bytes.fromhex(salt), int(n), int(r), int(p))
    return hmac.compare_digest(actual, bytes.fromhex(digest)) and stored is not None


def new_token() -> str:
    return "loft_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the server keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()
