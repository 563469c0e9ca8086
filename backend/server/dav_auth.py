"""Who a WebDAV request comes from: HTTP Basic, with a password or a device token.

=================== =================================================================
Basic credentials   accepted when
=================== =================================================================
user : password     the user's password (``loft user add``/``passwd``); its commits
                    name the device ``webdav``
user : loft_...     a live device token of that user (``loft login``; revoked with
                    ``loft devices revoke``/``logout``); its commits name its device
=================== =================================================================

Every failure counts against the account and the client's address in the login
throttle (``backend.server.throttle``), exactly as ``POST /v1/login`` does; while
barred, a request is answered 429 with ``Retry-After`` before anything is checked.
WebDAV clients send the credentials with every request, so a verified password is
remembered for ``REMEMBER_SECONDS`` (keyed by an HMAC of name and password under a
key of this process, with the password hash it matched): a changed password ends it at
once. Tokens are looked up on every request, so a revoked one stops at once.

Credentials cross the network in every request: they are accepted only over TLS, or
over plain HTTP from a loopback address (``Forbidden`` otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import MutableMapping
from typing import Any

from backend import protocol as p
from backend.errors import Forbidden, Unauthorized
from backend.server.accounts_api import check_password, throttled
from backend.server.files import Account
from backend.server.http import ServerState

REMEMBER_SECONDS = 300
MAX_REMEMBERED = 10_000
DEVICE = "webdav"


def _credentials(scope: MutableMapping[str, Any]) -> tuple[str, str]:
    header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
    scheme, _, encoded = header.partition(b" ")
    if scheme.lower() != b"basic" or not encoded.strip():
        raise Unauthorized("sign in with your Loft user name and password or a device token")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    user, sep, secret = decoded.partition(":")
    if not sep or not user or not secret or len(user) > 256 or len(secret) > 1024:
        raise Unauthorized("malformed Basic credentials")
    return user, secret


class BasicAuth:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._key = secrets.token_bytes(32)
        self._remembered: dict[bytes, tuple[float, str]] = {}

    async def account(self, scope: MutableMapping[str, Any]) -> tuple[str, Account]:
        """The user name and ``Account`` of the request; ``Unauthorized``,
        ``TooManyAttempts`` or ``Forbidden`` (no TLS off loopback) if none."""
        address = str((scope.get("client") or ("unknown", 0))[0])
        if scope.get("scheme") != "https" and not p.is_loopback(address):
            raise Forbidden("WebDAV needs https: credentials may not cross the network in clear")
        user, secret = _credentials(scope)
        throttled(self.state, user, address)
        if secret.startswith("loft_"):
            found = await self.state.metadata.resolve_token(secret)
            if found is not None and found[1] == user:
                return user, Account(found[0], found[3], found[2])
            self.state.logins.failed(user, address)
            raise Unauthorized("wrong user name or token (revoked or expired?)")
        key = hmac.new(self._key, f"{user}\0{secret}".encode(), hashlib.sha256).digest()
        remembered = self._remembered.get(key)
        if remembered is not None and remembered[0] > time.monotonic():
            row = await self.state.metadata.user_by_name(user)
            if row is not None and hmac.compare_digest(row[1], remembered[1]):
                return user, Account(row[0], row[2], DEVICE)
        found_user = await check_password(self.state, user, secret, address)
        if found_user is None:
            raise Unauthorized("wrong user name or password")
        self._remember(key, found_user[1])
        return user, Account(found_user[0], found_user[2], DEVICE)

    def _remember(self, key: bytes, pw_hash: str) -> None:
        now = time.monotonic()
        if len(self._remembered) >= MAX_REMEMBERED:
            self._remembered = {k: v for k, v in self._remembered.items() if v[0] > now}
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
        self._remembered[key] = (now + REMEMBER_SECONDS, pw_hash)
