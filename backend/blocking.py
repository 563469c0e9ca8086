"""Requests on blocking connections in worker threads: how chunks travel.

A chunk is up to 4 MiB. Received through httpx on the event loop, its body passes
through h11's parser in 64 KiB pieces, in Python, with the GIL held: a cold read of
1 GiB kept a mount's event loop busy with that alone, and the FUSE handlers waited
behind it. The standard library's ``http.client`` reads a body of known length in one
call that loops in C with the GIL released; run in worker threads (a connection of
its own per request, kept alive and pooled), downloads go on beside the handlers:
512 MiB in 4 MiB GETs over loopback took 0.24 s of CPU against 1.4–1.7 s through
httpx on trio. The same holds the other way: a chunk uploaded through h11 is
framed and sent in Python on the event loop, and ``http.client`` sends the body with
one ``sendall`` (GIL released).

``BlockingPool.send`` is a transport for ``backend.client.Client.request``: it
answers an ``httpx.Response`` (status, headers, body) or raises an
``httpx.TransportError`` (the failure that caused it chained, so an untrusted
certificate is still told apart), and the retry policy and the mapping of HTTP
failures to our errors stay in one place.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from urllib.parse import urlsplit

import httpx
import trio

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
"""How a kept-alive connection the server closed meanwhile fails on its next request."""


class BlockingPool:
    """Connections to one server, used one request at a time from worker threads.

    ``url`` is the API's base (``https://host:port/v1``); ``headers`` go with every
    request; ``timeout`` bounds each wait on the socket, ``connect`` the connection's
    making; at most ``size`` requests run at once, and as many idle connections wait
    for the next.
    """

    def __init__(
        self, url: str, headers: dict[str, str], *, timeout: float, connect: float,
        context: ssl.SSLContext | None, size: int,
    ) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = headers
        self._timeout = timeout
        self._connect = connect
        self._context = context or ssl.create_default_context()
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._limit = trio.CapacityLimiter(size)

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> httpx.Response:
        """One request, with ``body`` if any; its answer read whole. A caller
        cancelled while it waits leaves the thread to finish (or time out) on its own."""
        return await trio.to_thread.run_sync(
            self._send, method, self._prefix + path, {**self._headers, **headers}, body,
            limiter=self._limit, abandon_on_cancel=True,
        )

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for conn in idle:
            conn.close()

    def _send(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> httpx.Response:
        conn, reused = self._take()
        try:
            try:
                answer = self._exchange(conn, method, target, headers, body)
            except _STALE:
                if not reused:
                    raise
                conn.close()  # closed by the server while idle: once more, afresh
                conn, reused = self._new(), False
                answer = self._exchange(conn, method, target, headers, body)
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout(f"no answer within {self._timeout:.0f}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        response, body = answer
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        return httpx.Response(response.status, headers=response.getheaders(), content=body)

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str],
        body: bytes | None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        return response, response.read()

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new(), False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _new(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect, context=self._context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"no connection within {self._connect:.0f}s") from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        assert conn.sock is not None
        conn.sock.settimeout(self._timeout)
        return conn
