"""The HTTP client of one device: typed calls on the ``/v1`` API, with retries.

Every call of the API is safe to repeat (chunk uploads are idempotent, commits carry
operation ids the server applies once), so a call that fails in transit, or is
answered 502/503/504, is retried with the one backoff policy (``backend.retry``);
only the call that failed is repeated, never a whole transfer. HTTP failures become
the exceptions of ``backend.errors`` here and nowhere else: callers decide on their
class or ``err.permanent``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

import httpx
import trio

from backend import protocol as p
from backend.blocking import BlockingPool
from backend.cursor import Position
from backend.errors import HashMismatch, LoftError, ServerUnavailable, from_wire
from backend.retry import INITIAL, Backoff

log = logging.getLogger("loft.client")

_RETRY_STATUS = (502, 503, 504)
"""The HTTP answers that mean "not now" (a gateway or the server itself is unwell)."""
HASH_IN_THREAD = 256 * 1024
"""A downloaded chunk this large is checked against its id in a worker thread."""


async def _is_chunk(cid: str, data: bytes) -> bool:
    if len(data) >= HASH_IN_THREAD:  # milliseconds of hashing: off the event loop
        return await trio.to_thread.run_sync(p.chunk_id, data) == cid
    return p.chunk_id(data) == cid


class Client:
    """Use as ``async with Client(url, token) as c:``; one connection pool per client.

    A call is tried at most ``attempts`` times; ``backoff`` is the first delay of its
    ``backend.retry.Backoff``. ``timeout`` is httpx's per-request timeout (seconds).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        attempts: int = 5,
        backoff: float = INITIAL,
        timeout: float = 30.0,
        connections: int = 16,
        ca: str | None = None,
    ) -> None:
        """``ca``: a PEM file of the certificate authorities to trust for an
        ``https://`` server (a private CA), instead of the system's."""
        self.url = url.rstrip("/")
        self.token = token
        self.uploaded = 0
        """Bytes of chunk content sent (a delta counts its own size), for status."""
        self.downloaded = 0
        """Bytes of chunk content received (``get_chunk``, ``get_chunk_part``)."""
        self.attempts = attempts
        self.backoff = backoff
        headers = {"accept": p.CBOR}
        if token:
            headers["authorization"] = f"Bearer {token}"
        context = ssl.create_default_context(cafile=ca) if ca else None
        self._http = httpx.AsyncClient(
            base_url=self.url + p.API,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            verify=context or True,
        )
        self._blocking = BlockingPool(
            self.url + p.API, headers, timeout=timeout, connect=5.0, context=context,
            size=connections,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._blocking.close()
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
        blocking: bool = False,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One API call, retried on transport failures and 502/503/504.

        ``read_timeout`` overrides the client's httpx timeout for this call (a
        long-poll waits longer than a lookup). ``blocking``: sent from a worker thread
        (``backend.blocking``), for a large body or answer (no ``params``).
        """
        content = raw if raw is not None else (p.encode(body) if body is not None else None)
        assert not blocking or params is None, "blocking: no query parameters"
        headers = {
            "content-type": "application/octet-stream" if raw is not None else p.CBOR,
            **(headers or {}),
        }
        extra: dict[str, Any] = {}
        if read_timeout is not None:
            extra["timeout"] = httpx.Timeout(read_timeout, connect=5.0)
        failure = ""
        last: httpx.Response | None = None
        backoff = Backoff(initial=self.backoff)
        for attempt in range(self.attempts):
            if attempt:
                log.debug("retrying %s %s (attempt %d): %s", method, path, attempt + 1, failure)
                await backoff.wait()
            try:
                if blocking:
                    response = await self._blocking.send(method, path, headers, content)
                else:
                    response = await self._http.request(
                        method, path, content=content, params=params, headers=headers, **extra
                    )
            except httpx.TransportError as exc:
                untrusted = _certificate_error(exc)
                if untrusted is not None:  # no retry makes a certificate trusted
                    raise ServerUnavailable(
                        f"cannot trust the server at {self.url}: {untrusted}; if a private CA"
                        " signed its certificate, log in with --ca FILE"
                    ) from None
                failure = str(exc) or type(exc).__name__
                continue
            if response.status_code in _RETRY_STATUS:
                failure, last = f"HTTP {response.status_code}", response
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response
        if last is not None and last.headers.get("content-type") == p.CBOR:
            raise _error(last)  # the server's own words, e.g. its disk is full
        raise ServerUnavailable(f"cannot reach the server at {self.url}: {failure}")

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        return p.decode(response.content)

    # --- the API -----------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/health")
        return result

    async def login(
        self, user: str, password: str, device: str, ttl: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"user": user, "password": password, "device": device}
        if ttl is not None:
            body["ttl"] = ttl
        result: dict[str, Any] = await self.call("POST", "/login", body=body)
        return result

    async def logout(self) -> None:
        """Revoke this client's token on the server."""
        await self.call("POST", "/logout")

    async def devices(self) -> list[dict[str, Any]]:
        """This user's devices: ``{device, created, last_seen, expires, tokens, current}``."""
        result: list[dict[str, Any]] = (await self.call("GET", "/devices"))["devices"]
        return result

    async def revoke_device(self, device: str) -> int:
        """Revoke every token of this user's device ``device``; how many there were."""
        return int((await self.call("POST", "/devices/revoke", body={"device": device}))["revoked"])

    async def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/whoami")
        return result

    async def missing(self, ids: list[str]) -> list[str]:
        """The subset of ``ids`` this device must upload, in batches the server accepts."""
        missing: list[str] = []
        for start in range(0, len(ids), p.MAX_IDS_PER_QUERY):
            batch = ids[start : start + p.MAX_IDS_PER_QUERY]
            answer = await self.call("POST", "/chunks/missing", body={"ids": batch})
            missing.extend(answer["missing"])
        return missing

    async def put_chunk(self, cid: str, data: bytes) -> bool:
        """Upload one chunk; True if the server did not hold it before."""
        answer = await self.call("PUT", f"/chunks/{cid}", raw=data, blocking=True)
        self.uploaded += len(data)
        return bool(answer.get("stored"))

    async def put_chunk_delta(self, cid: str, base: str, change: bytes) -> bool:
        """Upload chunk ``cid`` as a delta against chunk ``base`` (``backend.delta``),
        which the server holds and this user can read; True if it was new."""
        answer = await self.call("PUT", f"/chunks/{cid}/delta/{base}", raw=change,
                                 blocking=True)
        self.uploaded += len(change)
        return bool(answer.get("stored"))

    async def put_chunks(self, chunks: list[tuple[str, bytes]]) -> int:
        """Upload a pack of small chunks in one request (all stored or none); how many
        of them the server did not hold for this user before."""
        packed = [[cid, data] for cid, data in chunks]
        answer = await self.call("POST", "/chunks", body={"chunks": packed}, blocking=True)
        self.uploaded += sum(len(data) for _, data in chunks)
        return int(answer.get("stored", 0))

    async def get_chunk(self, cid: str) -> bytes:
        """Download one chunk and check it against its id (a bad copy is fetched again)."""
        backoff = Backoff(initial=self.backoff)
        for attempt in range(3):
            if attempt:
                await backoff.wait()
            response = await self.request("GET", f"/chunks/{cid}", blocking=True)
            data = response.content
            self.downloaded += len(data)
            if await _is_chunk(cid, data):
                return data
            log.warning("chunk %s arrived damaged; fetching it again", cid)
        raise HashMismatch(f"chunk {cid} keeps arriving damaged")

    async def get_chunk_part(self, cid: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a chunk (``end`` within it): the server checks the
        whole chunk against its id before it answers, as a part cannot be checked here."""
        response = await self.request(
            "GET", f"/chunks/{cid}", blocking=True, headers={"range": f"bytes={start}-{end - 1}"}
        )
        data = response.content
        self.downloaded += len(data)
        if response.status_code == 200:  # a server without ranges: the whole chunk
            if not await _is_chunk(cid, data):
                raise HashMismatch(f"chunk {cid} arrived damaged")
            data = data[start:end]
        elif response.status_code != 206:
            raise LoftError(f"chunk {cid}: a part asked for, HTTP {response.status_code} answered")
        if len(data) != end - start:
            raise LoftError(f"chunk {cid}: {end - start} bytes asked for, {len(data)} answered")
        return data

    async def commit(
        self, ns: int, ops: list[dict[str, Any]], chunks: Sequence[tuple[str, bytes]] = ()
    ) -> dict[str, Any]:
        """Apply ``ops``; ``chunks`` (small content, ``p.MAX_INLINE_BYTES`` at most) go
        with them and are stored first."""
        body: dict[str, Any] = {"ops": ops}
        if chunks:
            body["chunks"] = [[cid, data] for cid, data in chunks]
        result: dict[str, Any] = await self.call("POST", f"/ns/{ns}/commit", body=body)
        self.uploaded += sum(len(data) for _, data in chunks)
        return result

    async def changes(
        self, ns: int, since: Position, wait: float = 0, limit: int = 1000
    ) -> dict[str, Any]:
        params = {"since": since, "wait": int(wait), "limit": limit}
        result: dict[str, Any] = await self.call(
            "GET", f"/ns/{ns}/changes", params=params, read_timeout=wait + 30.0
        )
        return result

    async def tree(self, ns: int, at: Position | None = None) -> dict[str, Any]:
        """``{seq, entries}``: the whole tree at ``at`` (default: the head), ordered by
        folder and name, read page by page at the ``seq`` of the first page (a feed
        position on the user's root namespace, ``backend.cursor``)."""
        params: dict[str, Any] = {"at": at} if at is not None else {}
        answer = await self.call("GET", f"/ns/{ns}/tree", params=params)
        entries: list[dict[str, Any]] = answer["entries"]
        while answer.get("next"):
            params = {"at": answer["seq"], "after": answer["next"]}
            answer = await self.call("GET", f"/ns/{ns}/tree", params=params)
            entries += answer["entries"]
        entries.sort(key=lambda e: (e["parent"], e["name"]))
        return {"seq": answer["seq"], "entries": entries}

    async def shares(self) -> list[dict[str, Any]]:
        """The shared folders in this user's tree (``backend.server.shares_api``)."""
        answer = await self.call("GET", "/shares")
        return list(answer["shares"])

    async def share(self, path: str, user: str, role: str) -> dict[str, Any]:
        body = {"path": path, "user": user, "role": role}
        result: dict[str, Any] = await self.call("POST", "/shares", body=body)
        return result

    async def unshare(self, path: str, user: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"path": path} if user is None else {"path": path, "user": user}
        result: dict[str, Any] = await self.call("POST", "/shares/remove", body=body)
        return result

    async def leave(self, path: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/shares/leave", body={"path": path})
        return result

    async def lookup(self, ns: int, path: str, children: bool = False) -> dict[str, Any]:
        """``{entry, children}`` at ``path``; the children read page by page."""
        params = {"path": path, "children": "1" if children else "0"}
        result: dict[str, Any] = await self.call("GET", f"/ns/{ns}/lookup", params=params)
        while result.get("next"):
            params["after"] = result["next"]
            page = await self.call("GET", f"/ns/{ns}/lookup", params=params)
            result["children"] += page["children"]
            result["next"] = page["next"]
        return result

    async def versions(self, ns: int, entry: str) -> list[dict[str, Any]]:
        """Every version of ``entry``, oldest first (read page by page)."""
        path = f"/ns/{ns}/entries/{entry}/versions"
        answer = await self.call("GET", path)
        result: list[dict[str, Any]] = answer["versions"]
        while answer.get("next"):
            answer = await self.call("GET", path, params={"after": answer["next"]})
            result += answer["versions"]
        return result


def _certificate_error(exc: BaseException) -> str | None:
    """Why the server's certificate was not trusted, if that is what failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _error(response: httpx.Response) -> LoftError:
    try:
        body = p.decode(response.content)
    except LoftError:
        body = None
    return from_wire(response.status_code, body)
