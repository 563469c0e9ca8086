"""Links: a file or folder served to anyone holding a URL, no account needed.

A link names an entry of a namespace (``links.ns``, ``links.entry``), not a path: a
rename or a move keeps it working, a delete ends it. Its token is 128 random bits
(``secrets.token_urlsafe(16)``, 22 characters) given once to its maker; the server
keeps only its SHA-256 (``links.hash``), as it does for bearer tokens, so a stolen
database names no usable link. Each link also has a short ``id`` (16 hex characters)
that lists and revocations use; it opens nothing.

Rules the server enforces on every use (``resolve``):

- expiry: a link past ``expires`` is refused as unknown (404), and deleted;
- its maker must still be an owner or editor of the namespace (a member removed, or
  made a viewer, ends the links they made), as only they may make one (``create``);
- a password (``pw_hash``, scrypt like account passwords) is asked for before any
  content; wrong guesses go through the login throttle (``backend.server.throttle``),
  keyed by the link, so a guesser is barred whatever address they come from.

Each use counts in ``uses`` and ``last_used``, and is logged (``links_api``).
Revocation deletes the row: the next request with its token is refused at once, on
every node.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from backend import protocol as p
from backend.errors import BadRequest, Forbidden, NotFound
from backend.server.database import Tx
from backend.server.journal import WRITE_ROLES

DEFAULT_TTL = 7 * 24 * 3600
"""A link's life unless its maker says otherwise."""
MAX_TTL = 10 * 366 * 24 * 3600
_COLUMNS = "id, ns, entry, user_id, created, expires, pw_hash, uses, last_used"


@dataclass(frozen=True)
class Link:
    id: str
    ns: int
    entry: str
    user_id: int
    created: int
    expires: int
    pw_hash: str | None
    uses: int
    last_used: int | None

    def to_wire(self, path: str | None) -> dict[str, object]:
        """The record ``GET /v1/links`` answers; ``path``: where it is now (None: gone)."""
        return {
            "id": self.id,
            "path": path,
            "created": self.created,
            "expires": self.expires,
            "password": self.pw_hash is not None,
            "uses": self.uses,
            "last_used": self.last_used,
        }


def new_token() -> str:
    """128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token(value: str) -> bool:
    """A token's shape (checked before any lookup): 22 URL-safe base64 characters."""
    return len(value) == 22 and all(c.isalnum() or c in "-_" for c in value)


def _row(r: tuple[object, ...]) -> Link:
    return Link(str(r[0]), int(str(r[1])), str(r[2]), int(str(r[3])), int(str(r[4])),
                int(str(r[5])), None if r[6] is None else str(r[6]), int(str(r[7])),
                None if r[8] is None else int(str(r[8])))


def role(tx: Tx, user_id: int, ns: int) -> str | None:
    rows = tx.execute("SELECT role FROM members WHERE ns = ? AND user_id = ?", (ns, user_id))
    return str(rows[0][0]) if rows else None


def create(
    tx: Tx, user_id: int, ns: int, entry: str, ttl: int, pw_hash: str | None, now: int
) -> tuple[str, Link]:
    """A new link to ``entry`` of ``ns`` by ``user_id`` (an owner or editor there):
    ``(token, link)``; the token is not kept."""
    if role(tx, user_id, ns) not in WRITE_ROLES:
        raise Forbidden("only an owner or editor of a folder may make links to it")
    if entry == p.ROOT_ID and ns == _root_ns(tx, user_id):
        raise BadRequest("a link to your whole workspace is refused: name a folder in it")
    if not 0 < ttl <= MAX_TTL:
        raise BadRequest("a link lives from one second to ten years")
    token, link_id = new_token(), secrets.token_hex(8)
    tx.execute(
        f"INSERT INTO links ({_COLUMNS}, hash) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, ?)",
        (link_id, ns, entry, user_id, now, now + ttl, pw_hash, token_hash(token)),
    )
    return token, Link(link_id, ns, entry, user_id, now, now + ttl, pw_hash, 0, None)


def _root_ns(tx: Tx, user_id: int) -> int | None:
    rows = tx.execute("SELECT root_ns FROM users WHERE id = ?", (user_id,))
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def mine(tx: Tx, user_id: int, now: int) -> list[Link]:
    """The user's live links, newest first (expired ones are deleted)."""
    tx.execute("DELETE FROM links WHERE user_id = ? AND expires <= ?", (user_id, now))
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM links WHERE user_id = ? ORDER BY created DESC, id",
        (user_id,),
    )
    return [_row(r) for r in rows]


def revoke(tx: Tx, user_id: int, link_id: str | None, token: str | None) -> str:
    """Delete the user's link given by id or by token; its id. 404 if not theirs."""
    if token is not None:
        rows = tx.execute("DELETE FROM links WHERE hash = ? AND user_id = ? RETURNING id",
                          (token_hash(token), user_id))
    else:
        rows = tx.execute("DELETE FROM links WHERE id = ? AND user_id = ? RETURNING id",
                          (link_id, user_id))
    if not rows:
        raise NotFound("no such link of yours (expired, revoked, or never made)")
    return str(rows[0][0])


def resolve(tx: Tx, token: str, now: int) -> Link | None:
    """The live link of ``token`` (unexpired, its maker still allowed to make it), or
    None; an expired link's row is deleted (this transaction must commit for that)."""
    rows = tx.execute(f"SELECT {_COLUMNS} FROM links WHERE hash = ?", (token_hash(token),))
    if not rows:
        return None
    link = _row(rows[0])
    if link.expires <= now:
        tx.execute("DELETE FROM links WHERE id = ?", (link.id,))
        return None
    if role(tx, link.user_id, link.ns) not in WRITE_ROLES:
        return None
    return link


def used(tx: Tx, link_id: str, now: int) -> None:
    tx.execute("UPDATE links SET uses = uses + 1, last_used = ? WHERE id = ?", (now, link_id))


def entry_path(tx: Tx, ns: int, entry: str) -> list[str] | None:
    """The names from the namespace's root down to ``entry``; None if it is gone."""
    names: list[str] = []
    current = entry
    for _ in range(p.MAX_DEPTH + 2):
        if current == p.ROOT_ID:
            return names[::-1]
        rows = tx.execute("SELECT parent, name FROM entries WHERE ns = ? AND id = ?",
                          (ns, current))
        if not rows:
            return None
        names.append(str(rows[0][1]))
        current = str(rows[0][0])
    return None
