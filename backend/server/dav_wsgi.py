"""A WSGI application served inside the ASGI server, on trio (WebDAV's WsgiDAV).

a2wsgi, the usual bridge, runs on asyncio's loop and cannot run under Hypercorn's
trio worker; this is the smallest bridge that can. Each request runs the WSGI app in
a worker thread (``trio.to_thread.run_sync``, at most ``threads`` requests at once);
the thread reads the request body and sends the answer through the loop
(``trio.from_thread.run`` on ASGI's ``receive`` and ``send``), one message at a time,
so both directions stream with the client's own pace as back-pressure: nothing holds
more than one body message and one piece of the answer.

What the environ holds (PEP 3333): ``SCRIPT_NAME`` is empty and ``PATH_INFO`` the
whole path (so the app sees ``/dav/...`` and its ``Destination`` headers alike),
decoded to str as UTF-8 bytes read as latin-1; ``wsgi.input`` gives ``b""`` at the
end of the body (Hypercorn has taken off any chunked framing). A client gone
mid-body is an ``OSError`` from ``wsgi.input`` and ends the request quietly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import trio

from backend.server.limits import Receive, Send

log = logging.getLogger("loft.server")

StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


_SERVERS_OWN = ("date", "server")
"""Headers Hypercorn sets itself: the app's would go out twice."""


class ClientGone(OSError):
    """The client went away before its request body ended."""


class _Input:
    """``wsgi.input``: the request body, read through the loop as the app asks."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._buffer = bytearray()
        self._more = True

    def _fill(self) -> bool:
        """Receive the next body message; False at the end of the body."""
        if not self._more:
            return False
        message = trio.from_thread.run(self._receive)
        if message["type"] == "http.disconnect":
            self._more = False
            raise ClientGone("the client went away mid-request")
        self._buffer += message.get("body", b"")
        self._more = bool(message.get("more_body", False))
        return True

    def read(self, size: int | None = -1) -> bytes:
        while (size is None or size < 0 or len(self._buffer) < size) and self._fill():
            pass
        count = len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def readline(self, size: int = -1) -> bytes:
        while b"\n" not in self._buffer and (size < 0 or len(self._buffer) < size):
            if not self._fill():
                break
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        return self.read(end if size < 0 else min(end, size))

    def __iter__(self) -> _Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Output:
    """``start_response`` and the body: the status line and headers go out with the
    first piece of the body (or at its end), as PEP 3333 asks."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
                        if k.lower() not in _SERVERS_OWN]
        return self.write

    def _start(self) -> None:
        if not self.started:
            self.started = True
            trio.from_thread.run(self._send, {"type": "http.response.start",
                                              "status": self.status, "headers": self.headers})

    def write(self, data: bytes) -> None:
        if data:
            self._start()
            trio.from_thread.run(self._send, {"type": "http.response.body", "body": data,
                                              "more_body": True})

    def finish(self) -> None:
        self._start()
        trio.from_thread.run(self._send, {"type": "http.response.body", "body": b""})


def environ_of(scope: MutableMapping[str, Any], wsgi_input: Any) -> dict[str, Any]:
    """The WSGI environ of an ASGI ``http`` scope."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": wsgi_input,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class WsgiBridge:
    """Serve ``app`` for ASGI ``http`` requests, each in a worker thread."""

    def __init__(self, app: WSGIApp, threads: int = 16) -> None:
        self.app = app
        self.limiter = trio.CapacityLimiter(threads)

    async def serve(self, scope: MutableMapping[str, Any], receive: Receive, send: Send,
                    extra: dict[str, Any]) -> None:
        """Answer one request; ``extra`` is added to its environ (who is calling)."""
        environ = environ_of(scope, _Input(receive))
        environ.update(extra)
        output = _Output(send)

        def call() -> None:
            result = self.app(environ, output.start_response)
            try:
                for data in result:
                    output.write(data)
                output.finish()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        try:
            await trio.to_thread.run_sync(call, limiter=self.limiter)
        except ClientGone:
            log.info("%s %s: the client went away mid-request", scope["method"], scope["path"])
