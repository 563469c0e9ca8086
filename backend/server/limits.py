"""Bounds on what one request may hold of the server: requests in flight per client
address and in all, and the deadline of a request's body.

Hypercorn bounds the rest (``backend.server.main``): a connection's request line and
headers arrive within its keep-alive timeout (``KEEP_ALIVE_SECONDS``) and 16 KiB, and
no connection stays silent longer than ``READ_TIMEOUT_SECONDS`` (above the longest
long-poll, ``protocol.MAX_WAIT_SECONDS``).

``RequestLimits`` is an ASGI middleware around the whole app; what it guarantees:

- a request beyond ``per_address`` in flight from its client's address, or beyond
  ``total`` in all, is answered 503 at once (``Retry-After: 1``; clients retry with
  backoff). Counted are requests (from their headers to the end of their answer), not
  idle keep-alive connections: those cost a socket and end after the keep-alive
  timeout. Behind a reverse proxy every request comes from the proxy's address: give
  ``--max-requests-per-address`` the value of ``--max-requests``.
- the body keeps coming: all that was received must have arrived by ``body_seconds``
  after the request began plus one second per ``MIN_BODY_RATE`` bytes of it, else
  ``TooSlow`` (408) is raised from ``receive`` into the route, which answers it.
- an answer sent before the body was read whole (a refusal: 401, 413, 408, 503)
  first drops what arrives of the body for ``DRAIN_SECONDS`` (up to ``DRAIN_BYTES``);
  if the body is still not whole, the answer goes out and closes the connection
  (``Connection: close`` on HTTP/1.x) instead of waiting for the rest. While that
  answer goes out, what Hypercorn queued of the body is received and dropped until
  its ``http.disconnect``: Hypercorn (HTTP/1.1) holds the connection until the app
  has taken every queued message, so without this a client still sending would
  deadlock the connection.
- after the client went away, the route's answer is dropped, quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import trio

from backend import protocol as p
from backend.errors import ServerUnavailable, TooSlow

log = logging.getLogger("loft.server")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

KEEP_ALIVE_SECONDS = 75
"""An idle connection, or one still sending its request line and headers, is closed."""
READ_TIMEOUT_SECONDS = 120
"""A connection that sends nothing this long is closed, whatever it waits for."""
MIN_BODY_RATE = 8 * 1024
"""Bytes per second a request body must average after its first ``body_seconds``."""
DRAIN_SECONDS = 1.0
DRAIN_BYTES = p.MAX_COMMIT_BYTES
"""What of an unread body is read and dropped before a refusal, to keep the connection."""


@dataclass(frozen=True)
class Limits:
    per_address: int = 64
    """Requests in flight from one client address."""
    total: int = 512
    """Requests in flight in all."""
    body_seconds: float = 30.0
    """Grace for a request body, before ``MIN_BODY_RATE`` counts."""


class RequestLimits:
    """The ASGI middleware enforcing ``Limits`` (see the module)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self._by_address: dict[str, int] = {}
        self._total = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.limits.body_seconds)
        client = scope.get("client")
        address = str(client[0]) if client else ""
        held = self._by_address.get(address, 0)
        if held >= self.limits.per_address or self._total >= self.limits.total:
            await exchange.refuse_busy()
            return
        self._by_address[address] = held + 1
        self._total += 1
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            self._total -= 1
            left = self._by_address[address] - 1
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]


def _has_body(scope: MutableMapping[str, Any]) -> bool:
    headers = dict(scope.get("headers", ()))
    if b"transfer-encoding" in headers:
        return True
    length = headers.get(b"content-length")
    if length is not None:
        return bool(length.strip() != b"0")
    return scope.get("http_version") not in ("1.0", "1.1") and scope["method"] in (
        "POST", "PUT", "PATCH")


class _Exchange:
    """One request's ``receive`` and ``send``, with its body deadline and refusals."""

    def __init__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send,
                 grace: float) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.deadline = trio.current_time() + grace
        self.body_done = not _has_body(scope)
        self.gone = False
        self.closing = False

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()
        with trio.move_on_at(self.deadline):
            message = await self._receive()
            if message["type"] == "http.request":
                self.deadline += len(message.get("body", b"")) / MIN_BODY_RATE
                self.body_done = not message.get("more_body", False)
            else:
                self.body_done = self.gone = message["type"] == "http.disconnect"
            return message
        raise TooSlow("the request body did not arrive in time; try again")

    async def send(self, message: Message) -> None:
        if self.gone:
            return  # nobody to answer
        if message["type"] == "http.response.start" and not self.body_done:
            await self._drain_briefly()
        if message["type"] == "http.response.start" and not self.body_done:
            self.closing = True
            if self.scope.get("http_version") in ("1.0", "1.1"):
                message = {**message,
                           "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        last = message["type"] == "http.response.body" and not message.get("more_body", False)
        if not (self.closing and last):
            await self._send(message)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain)
            await self._send(message)
            nursery.cancel_scope.cancel()

    async def _drain_briefly(self) -> None:
        """Drop what arrives of the body for ``DRAIN_SECONDS``, up to ``DRAIN_BYTES``:
        a client sending its body briskly (httpx sends it whole before it reads the
        answer) is read to its end and keeps its connection; a slow one is not waited for."""
        dropped = 0
        with trio.move_on_after(DRAIN_SECONDS):
            while not self.body_done and dropped <= DRAIN_BYTES:
                message = await self._receive()
                dropped += len(message.get("body", b""))
                self.body_done = message["type"] != "http.request" or not message.get(
                    "more_body", False)
                self.gone = message["type"] == "http.disconnect"

    async def _drain(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def refuse_busy(self) -> None:
        error = ServerUnavailable("too many requests in flight; try again")
        body = p.encode(error.to_wire())
        await self.send({"type": "http.response.start", "status": error.status, "headers": [
            (b"content-type", p.CBOR.encode()), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1")]})
        await self.send({"type": "http.response.body", "body": body})
