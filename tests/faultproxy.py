"""A fault-injecting TCP proxy for tests: the network between a device and its server.

``FaultProxy(upstream_port)`` listens on a free port of 127.0.0.1 and forwards every
connection to the server at ``upstream_port``. A device logged in with ``proxy.url``
talks to its server only through it, so a test can take the network away and give
it back while the device runs:

    ================== ===============================================================
    call               what the device sees from then on
    ================== ===============================================================
    ``cut()``          every open connection closed (both ends); new connections are
                       accepted and closed at once: "server disconnected"
    ``stall()``        connections accepted and held; nothing forwarded either way
                       (a request waits for its timeout, not for a failure)
    ``restore()``      forwarding again; stalled connections carry on where they were
    ``cut_after(n)``   forwarding until ``n`` more bytes went client→server, then
                       ``cut()``; with ``after=marker``, counted from the first
                       ``marker`` in the client→server stream (e.g. ``b"/commit "``)
    ``cut_reply(m)``   forwarding the request holding ``m`` whole, then ``cut()``
                       when its reply starts: the server acted, the client never
                       hears of it (a lost reply)
    ================== ===============================================================

``bytes_up`` and ``bytes_down`` count the bytes forwarded each way; ``tripped``
is set when a ``cut_after``/``cut_reply`` has fired (``wait_tripped``).

One background thread runs a ``selectors`` loop over non-blocking sockets, so the
proxy works the same from sync and trio tests. Every control call is handed to that
thread and returns once it took effect (after ``cut()`` returns, no byte moves).
Use as a context manager: leaving it stops the thread and closes every socket.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType

_CHUNK = 64 * 1024
_HOLD = 256 * 1024
"""Bytes buffered per direction before the proxy stops reading that side."""


class _Pipe:
    """One client connection and its upstream connection, with a buffer each way."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.up = bytearray()  # client → server, not yet sent
        self.down = bytearray()  # server → client, not yet sent
        self.client_eof = False
        self.upstream_eof = False
        self.tail = b""  # the end of the client→server stream, for markers across reads
        self.doomed = False  # carries the request whose reply is to be lost
        self.masks: dict[socket.socket, int] = {client: 0, upstream: 0}

    def close(self) -> None:
        _reset(self.client)
        _reset(self.upstream)


def _reset(sock: socket.socket) -> None:
    """Close with a RST rather than a FIN: the peer learns at once, as when a link drops."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "forward"
        self.bytes_up = 0
        self.bytes_down = 0
        self.accepted = 0
        self.tripped = threading.Event()
        self._budget: int | None = None
        self._marker: bytes | None = None
        self._armed = False  # the budget counts (the marker, if any, was seen)
        self._reply_marker: bytes | None = None
        self._pipes: list[_Pipe] = []
        self._sel = selectors.DefaultSelector()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._calls: list[tuple[Callable[[], None], threading.Event]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="faultproxy", daemon=True)
        self._started = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    # --- lifetime ------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._started = True
        self._thread.start()
        return self

    def close(self) -> None:
        if self._started and self._thread.is_alive():
            self._stopping = True
            self._wake_w.send(b"x")
            self._thread.join(10)
        for pipe in self._pipes:
            pipe.close()
        self._pipes.clear()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- control (from any thread) ---------------------------------------------------

    def cut(self) -> None:
        self._call(self._cut)

    def stall(self) -> None:
        self._call(lambda: self._set_mode("stall"))

    def restore(self) -> None:
        def run() -> None:
            self._budget = self._marker = self._reply_marker = None
            self._armed = False
            self._set_mode("forward")

        self._call(run)

    def cut_after(self, n_bytes_upstream: int, after: bytes | None = None) -> None:
        """Forward ``n`` more client→server bytes (counted from ``after``), then cut."""

        def run() -> None:
            self.tripped.clear()
            self._budget, self._marker = n_bytes_upstream, after
            self._armed = after is None
            self._set_mode("forward")

        self._call(run)

    def cut_reply(self, marker: bytes) -> None:
        """Forward the request holding ``marker``; cut when its reply begins."""

        def run() -> None:
            self.tripped.clear()
            self._reply_marker = marker
            self._set_mode("forward")

        self._call(run)

    def wait_tripped(self, timeout: float) -> bool:
        return self.tripped.wait(timeout)

    def _call(self, fn: Callable[[], None]) -> None:
        if not self._thread.is_alive():
            fn()
            return
        done = threading.Event()
        with self._lock:
            self._calls.append((fn, done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("the fault proxy's thread does not answer")

    # --- the loop (the proxy's own thread) -------------------------------------------

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        for pipe in list(self._pipes):
            self._interest(pipe)

    def _cut(self) -> None:
        self.mode = "cut"
        self._budget = self._marker = self._reply_marker = None
        self._armed = False
        for pipe in list(self._pipes):
            self._drop(pipe)

    def _trip(self) -> None:
        self._cut()
        self.tripped.set()

    def _loop(self) -> None:
        while not self._stopping:
            for key, mask in self._sel.select(0.5):
                if key.data == "wake":
                    self._run_calls()
                elif key.data == "accept":
                    self._accept()
                else:
                    pipe, sock = key.data
                    if pipe in self._pipes:
                        self._service(pipe, sock, mask)

    def _run_calls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, done in calls:
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.accepted += 1
        if self.mode == "cut":
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        pipe = _Pipe(client, upstream)
        self._pipes.append(pipe)
        self._interest(pipe)  # registers its sockets for what the mode allows

    def _drop(self, pipe: _Pipe) -> None:
        if pipe in self._pipes:
            self._pipes.remove(pipe)
            for sock in (pipe.client, pipe.upstream):
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
        pipe.close()

    def _interest(self, pipe: _Pipe) -> None:
        forwarding = self.mode == "forward"
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        budget_left = self._budget is None or not self._armed or self._budget > 0
        wanted = {
            pipe.client: (
                (read if forwarding and budget_left and not pipe.client_eof else 0)
                if len(pipe.up) < _HOLD
                else 0
            )
            | (write if forwarding and pipe.down else 0),
            pipe.upstream: (
                (read if forwarding and not pipe.upstream_eof and len(pipe.down) < _HOLD else 0)
                | (write if forwarding and pipe.up else 0)
            ),
        }
        for sock, mask in wanted.items():
            if pipe.masks[sock] != mask:
                pipe.masks[sock] = mask
                # selectors cannot hold a socket with no events: unregister it meanwhile.
                if mask:
                    try:
                        self._sel.modify(sock, mask, (pipe, sock))
                    except KeyError:
                        self._sel.register(sock, mask, (pipe, sock))
                else:
                    with contextlib.suppress(KeyError):
                        self._sel.unregister(sock)

    def _service(self, pipe: _Pipe, sock: socket.socket, mask: int) -> None:
        if self.mode != "forward":
            self._interest(pipe)
            return
        try:
            if mask & selectors.EVENT_READ:
                if sock is pipe.client:
                    self._read_client(pipe)
                else:
                    self._read_upstream(pipe)
            if pipe not in self._pipes or self.mode != "forward":
                return
            if mask & selectors.EVENT_WRITE:
                self._flush(pipe, sock)
        except OSError:
            self._drop(pipe)
            return
        if pipe not in self._pipes:
            return
        if (pipe.client_eof and not pipe.up) and (pipe.upstream_eof and not pipe.down):
            self._drop(pipe)
            return
        if self._armed and self._budget == 0 and not any(p.up for p in self._pipes):
            self._trip()
            return
        self._interest(pipe)

    def _read_client(self, pipe: _Pipe) -> None:
        want = _CHUNK
        if self._armed and self._budget is not None:
            want = min(want, self._budget)
        data = pipe.client.recv(want) if want else b""
        if not data:
            if want:
                pipe.client_eof = True
                if not pipe.up:
                    pipe.upstream.shutdown(socket.SHUT_WR)
            return
        if self._budget is not None and not self._armed and self._marker is not None:
            seen = pipe.tail + data
            at = seen.find(self._marker)
            if at >= 0:
                self._armed = True
                start = max(0, at - len(pipe.tail))  # where the marker starts in data
                counted = len(data) - start
                if counted > self._budget:  # forward only up to the budget
                    data = data[: start + self._budget]
                    counted = self._budget
                self._budget -= counted
        elif self._armed and self._budget is not None:
            self._budget -= len(data)
        if self._reply_marker is not None and self._reply_marker in pipe.tail + data:
            pipe.doomed = True
        keep = max(
            len(self._marker or b""), len(self._reply_marker or b"")
        )  # enough for a marker split across two reads
        pipe.tail = (pipe.tail + data)[-keep:] if keep else b""
        pipe.up += data

    def _read_upstream(self, pipe: _Pipe) -> None:
        data = pipe.upstream.recv(_CHUNK)
        if not data:
            pipe.upstream_eof = True
            if not pipe.down:
                pipe.client.shutdown(socket.SHUT_WR)
            return
        if pipe.doomed:
            self._trip()  # the server answered: the request was applied; lose the answer
            return
        pipe.down += data

    def _flush(self, pipe: _Pipe, sock: socket.socket) -> None:
        if sock is pipe.upstream and pipe.up:
            sent = sock.send(pipe.up)
            del pipe.up[:sent]
            self.bytes_up += sent
            if not pipe.up and pipe.client_eof:
                sock.shutdown(socket.SHUT_WR)
        elif sock is pipe.client and pipe.down:
            sent = sock.send(pipe.down)
            del pipe.down[:sent]
            self.bytes_down += sent
            if not pipe.down and pipe.upstream_eof:
                sock.shutdown(socket.SHUT_WR)
