"""Opening the stores a server runs on, and running it under Hypercorn's trio worker."""

from __future__ import annotations

import logging
import signal
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from backend import protocol as p
from backend.errors import BadRequest, LocalError
from backend.private import private_dir
from backend.server.app import create_app
from backend.server.blocks import BlockStore, open_block_store
from backend.server.database import Database
from backend.server.gc import DEFAULT_GRACE, DEFAULT_INTERVAL, every
from backend.server.gc import safe_url as _safe
from backend.server.http import ServerState
from backend.server.limits import KEEP_ALIVE_SECONDS, READ_TIMEOUT_SECONDS, Limits, RequestLimits
from backend.server.metadata import MetadataStore
from backend.server.notifier import Notifier, PostgresListener
from backend.server.retention import DEFAULT_POLICY, Policy, parse_policy

log = logging.getLogger("loft.server")


def open_database(url: str | None, data_dir: Path) -> Database:
    """``None`` → ``DATA/metadata.db``; ``sqlite:///PATH``; ``postgresql://...``."""
    if url is None or url.startswith("sqlite:"):
        from backend.server.sqlite_db import SQLiteDatabase

        return SQLiteDatabase(data_dir / "metadata.db" if url is None else Path(urlsplit(url).path))
    if url.startswith(("postgresql://", "postgres://")):
        from backend.server.postgres_db import PostgresDatabase

        return PostgresDatabase(url)
    raise BadRequest(f"--metadata {url}: use sqlite:///PATH or postgresql://...")


@contextmanager
def open_metadata(url: str | None, data_dir: Path) -> Iterator[MetadataStore]:
    store = MetadataStore(open_database(url, data_dir))
    try:
        yield store
    finally:
        store.close()


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"--listen {listen}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def check_bind(config: Config, listen: str) -> None:
    """Fail fast, as one line, if ``listen`` cannot be bound (in use, not a local address).

    Hypercorn binds inside its worker, where an ``OSError`` surfaces as a traceback
    wrapped in exception groups; so bind once here, before any store is opened, and
    close again. Hypercorn's own bind a moment later sets ``SO_REUSEADDR`` and takes
    the address back.
    """
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        raise LocalError(f"--listen {listen}: cannot listen there: {exc.strerror or exc}") from None
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()


def check_tls(cert: str, key: str) -> None:
    """Fail fast, as one line, if the certificate and key cannot serve TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise LocalError(f"--tls-cert {cert} --tls-key {key}: cannot use them: {exc}") from None


async def serve(
    data_dir: Path,
    listen: str,
    metadata_url: str | None,
    blocks_url: str | None,
    retention: Policy | None = None,
    gc_interval: int = DEFAULT_INTERVAL,
    tls: tuple[str, str] | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; stores are opened first, so a bad URL fails fast.

    Every ``gc_interval`` seconds (0: never) a garbage collection pass
    (``backend.server.gc``) applies ``retention`` and frees what nothing keeps. What one
    connection and one request may hold is bounded by ``limits`` and the deadlines of
    ``backend.server.limits``."""
    host, port = parse_listen(listen)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our logging setup
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS  # also the deadline of a request's headers
    config.read_timeout = READ_TIMEOUT_SECONDS
    config.graceful_timeout = 2
    if tls is not None:
        check_tls(*tls)
        config.certfile, config.keyfile = tls  # HTTP/2 and HTTP/1.1, by ALPN
    check_bind(config, listen)
    scheme = "https" if tls is not None else "http"
    if tls is None and not p.is_loopback(host):
        log.warning("serving plain http on %s: passwords and tokens cross the network in"
                    " clear; give --tls-cert and --tls-key, or serve behind a TLS proxy", host)
    # Owner-only (backend.private): chunks are content, metadata.db password hashes.
    await trio.to_thread.run_sync(private_dir, data_dir, "data directory", False)
    blocks: BlockStore = await trio.to_thread.run_sync(open_block_store, blocks_url, data_dir)
    database = await trio.to_thread.run_sync(open_database, metadata_url, data_dir)
    metadata = MetadataStore(database)
    notifier = Notifier()
    app = RequestLimits(create_app(ServerState(metadata, blocks, notifier)), limits or Limits())
    try:
        async with trio.open_nursery() as nursery:
            if database.url.startswith(("postgresql://", "postgres://")):
                nursery.start_soon(PostgresListener(database.url, notifier).run)
            if gc_interval > 0:
                policy = retention or parse_policy(DEFAULT_POLICY)
                nursery.start_soon(every, metadata, blocks, policy, gc_interval, DEFAULT_GRACE)
            log.info(
                "serving %s://%s:%d (metadata %s, blocks %s)",
                scheme,
                host,
                port,
                _safe(database.url),
                blocks.url,
            )
            await hypercorn_serve(app, config, shutdown_trigger=_until_signalled)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()
    finally:
        metadata.close()
        await blocks.close()
        log.info("server stopped")


async def _until_signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return
