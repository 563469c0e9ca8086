"""The routes of accounts: login (throttled), logout, and a user's devices.

``POST /v1/login`` checks the throttles (``backend.server.throttle``) before it
derives anything, and again once its turn to derive comes; every failure counts
against the account and the client's address. Revocation (logout, a device revoked)
deletes token rows, so the next request with such a token is refused 401 on every
node (``backend.server.accounts``).
"""

from __future__ import annotations

import logging
import math
import time

import trio
from starlette.requests import Request
from starlette.responses import Response

from backend import protocol as p
from backend.errors import BadRequest, TooManyAttempts, Unauthorized
from backend.server import accounts
from backend.server.auth import new_token, token_hash, verify_password
from backend.server.http import (
    Caller,
    ServerState,
    answer_errors,
    authenticated,
    bearer_token,
    body_map,
    cbor,
    state_of,
)
from backend.server.metadata import MetadataStore

log = logging.getLogger("loft.server")


def _device_name(value: object) -> str:
    """A device name to revoke: looser than ``protocol.validate_device_name``, so that
    a name given before names were checked can still be revoked."""
    if not isinstance(value, str) or not 0 < len(value) <= 64 or "\0" in value:
        raise BadRequest("device name must be 1-64 characters")
    return value


def throttled(state: ServerState, user: str, address: str) -> None:
    """Refuse at once, 429, while the account or the address is barred."""
    wait = state.logins.wait(user, address)
    if wait:
        if state.logins.first_refusal(user, address):
            log.warning("login throttled: account %r from %s for %d s", user, address, wait)
        raise TooManyAttempts(
            f"too many failed logins; try again in {wait} s", {"retry_after": wait}
        )


async def check_password(
    state: ServerState, user: str, password: str, address: str
) -> tuple[int, str, int] | None:
    """The user's ``(id, pw_hash, root_ns)`` if the password is theirs, else None
    (counted as a failure). At most ``KDF_THREADS`` derivations run at once."""
    logins = state.logins
    if logins.crowded():
        log.warning("login refused, too many waiting: account %r from %s", user, address)
        raise TooManyAttempts("the server is busy checking passwords; try again in 1 s",
                              {"retry_after": 1})
    found = await state.metadata.user_by_name(user)
    async with logins.kdf:
        throttled(state, user, address)  # failures counted while this one waited
        stored = found[1] if found else None
        ok = await trio.to_thread.run_sync(verify_password, password, stored)
        if not found or not ok:
            logins.failed(user, address)
            return None
    logins.succeeded(user)
    return found


@answer_errors
async def login(request: Request) -> Response:
    body = await body_map(request, 64 * 1024)
    user = p.field(body, "user", str)
    password = p.field(body, "password", str)
    device = p.validate_device_name(body.get("device", "device"))
    state = state_of(request)
    ttl = min(p.nonneg_int(body, "ttl", state.max_token_ttl), state.max_token_ttl)
    address = request.client.host if request.client else "unknown"
    throttled(state, user, address)
    found = await check_password(state, user, password, address)
    if found is None:
        log.info("login refused for %r from %s", user, address)
        raise Unauthorized("wrong user name or password")
    token = new_token()
    # Rounded up: the token lives at least ``ttl`` seconds (it is valid while the
    # whole current second is below ``expires``).
    expires = math.ceil(time.time()) + ttl
    await state.metadata.add_token(token, found[0], device, expires)
    log.info("login: %s on device %s", user, device)
    return cbor({"token": token, "user": user, "root_ns": found[2], "expires": expires})


@authenticated
async def logout(request: Request, caller: Caller) -> Response:
    hashed = token_hash(bearer_token(request))
    await state_of(request).metadata.account_tx(lambda tx: accounts.drop(tx, hashed))
    log.info("logout: %s on device %s", caller.user, caller.device)
    return cbor({})


@authenticated
async def devices(request: Request, caller: Caller) -> Response:
    now = int(time.time())
    metadata: MetadataStore = state_of(request).metadata
    rows = await metadata.account_tx(lambda tx: accounts.devices(tx, caller.user_id, now), False)
    return cbor({"devices": [row.to_wire(caller.device) for row in rows]})


@authenticated
async def revoke(request: Request, caller: Caller) -> Response:
    device = _device_name((await body_map(request, 64 * 1024)).get("device"))
    count = await state_of(request).metadata.account_tx(
        lambda tx: accounts.revoke_device(tx, caller.user_id, device)
    )
    log.info("revoked device %r of %s (%d token(s)), by %s", device, caller.user, count,
             caller.device)
    return cbor({"revoked": count})
