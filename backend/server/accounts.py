"""Accounts and their bearer tokens in the metadata database: issue, resolve with
renewal, list and revoke a user's devices, change a password, remove a user.

Every function runs inside the caller's transaction (``Tx``), so what it changes
commits together or not at all. A token lives ``ttl`` seconds from its last renewal:
a use at least ``RENEW_EVERY`` after the previous renewal moves ``tokens.expires`` to
``now + ttl`` and ``token_use.last_seen`` to now (so a busy device writes at most once
an hour per token, and "last seen" is exact to that hour). A token issued before
``token_use`` existed has no row there: its first use renews it with the server's
default life, which also shortens what was issued for a year.

Revocation deletes the ``tokens`` rows: every node resolves a token from the database
on every request, so a revoked token is refused at once, everywhere. Expired tokens are
purged at every login and when one is presented.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.errors import Conflict, NotFound
from backend.server import quota
from backend.server.auth import DEFAULT_TOKEN_TTL
from backend.server.database import Tx

RENEW_EVERY = 3600
"""Seconds between two renewals of one token (each is a write)."""


@dataclass(frozen=True)
class TokenRow:
    user_id: int
    user: str
    device: str
    root_ns: int
    expires: int
    ttl: int
    last_seen: int


@dataclass(frozen=True)
class DeviceRow:
    """One device name of a user, over all its live tokens."""

    device: str
    created: int
    last_seen: int
    expires: int
    tokens: int

    def to_wire(self, current: str) -> dict[str, object]:
        return {
            "device": self.device,
            "created": self.created,
            "last_seen": self.last_seen,
            "expires": self.expires,
            "tokens": self.tokens,
            "current": self.device == current,
        }


def issue(tx: Tx, hashed: str, user_id: int, device: str, now: int, expires: int) -> None:
    """Record a new token (its ``ttl`` is ``expires - now``), after purging expired ones."""
    purge_expired(tx, now)
    tx.execute(
        "INSERT INTO tokens (hash, user_id, device, created, expires) VALUES (?, ?, ?, ?, ?)",
        (hashed, user_id, device, now, expires),
    )
    tx.execute(
        "INSERT INTO token_use (hash, ttl, last_seen) VALUES (?, ?, ?)",
        (hashed, max(expires - now, 0), now),
    )


def find(tx: Tx, hashed: str) -> TokenRow | None:
    """The token's row, expired or not; None if it was never issued or is revoked."""
    rows = tx.execute(
        "SELECT u.id, u.name, t.device, u.root_ns, t.expires, r.ttl, r.last_seen"
        " FROM tokens t JOIN users u ON u.id = t.user_id"
        " LEFT JOIN token_use r ON r.hash = t.hash WHERE t.hash = ?",
        (hashed,),
    )
    if not rows:
        return None
    r = rows[0]
    ttl = DEFAULT_TOKEN_TTL if r[5] is None else int(r[5])
    return TokenRow(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), ttl, int(r[6] or 0))


def renew(tx: Tx, hashed: str, ttl: int, now: int) -> None:
    """Move a live token's expiry to ``now + ttl``; a token revoked or expired
    meanwhile stays as it is (the ``UPDATE`` re-checks)."""
    renewed = tx.execute(
        "UPDATE tokens SET expires = ? WHERE hash = ? AND expires > ? RETURNING hash",
        (now + ttl, hashed, now),
    )
    if renewed:
        tx.execute(
            "INSERT INTO token_use (hash, ttl, last_seen) VALUES (?, ?, ?)"
            " ON CONFLICT (hash) DO UPDATE SET last_seen = excluded.last_seen",
            (hashed, ttl, now),
        )


def drop(tx: Tx, hashed: str) -> bool:
    """Revoke one token; whether it existed."""
    tx.execute("DELETE FROM token_use WHERE hash = ?", (hashed,))
    return bool(tx.execute("DELETE FROM tokens WHERE hash = ? RETURNING hash", (hashed,)))


def purge_expired(tx: Tx, now: int) -> None:
    tx.execute(
        "DELETE FROM token_use WHERE hash IN (SELECT hash FROM tokens WHERE expires <= ?)", (now,)
    )
    tx.execute("DELETE FROM tokens WHERE expires <= ?", (now,))


def devices(tx: Tx, user_id: int, now: int) -> list[DeviceRow]:
    """The user's devices with a live token, by name."""
    rows = tx.execute(
        "SELECT t.device, MIN(t.created), MAX(COALESCE(r.last_seen, t.created)),"
        " MAX(t.expires), COUNT(*) FROM tokens t LEFT JOIN token_use r ON r.hash = t.hash"
        " WHERE t.user_id = ? AND t.expires > ? GROUP BY t.device ORDER BY t.device",
        (user_id, now),
    )
    return [DeviceRow(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def revoke_device(tx: Tx, user_id: int, device: str) -> int:
    """Revoke every token of the user's device ``device``; how many there were."""
    tx.execute(
        "DELETE FROM token_use WHERE hash IN"
        " (SELECT hash FROM tokens WHERE user_id = ? AND device = ?)",
        (user_id, device),
    )
    gone = tx.execute(
        "DELETE FROM tokens WHERE user_id = ? AND device = ? RETURNING hash", (user_id, device)
    )
    if not gone:
        raise NotFound(f"no device {device!r} is logged in to this account")
    return len(gone)


def revoke_user(tx: Tx, user_id: int) -> int:
    """Revoke every token of the user; how many there were."""
    tx.execute(
        "DELETE FROM token_use WHERE hash IN (SELECT hash FROM tokens WHERE user_id = ?)",
        (user_id,),
    )
    return len(tx.execute("DELETE FROM tokens WHERE user_id = ? RETURNING hash", (user_id,)))


def user_id(tx: Tx, name: str) -> int:
    rows = tx.execute("SELECT id FROM users WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no user {name}")
    return int(rows[0][0])


def set_password(tx: Tx, name: str, pw_hash: str) -> int:
    """Change the user's password and revoke every token; how many were revoked."""
    uid = user_id(tx, name)
    tx.execute("UPDATE users SET pw_hash = ? WHERE id = ?", (pw_hash, uid))
    return revoke_user(tx, uid)


_NS_TABLES = ("entries", "versions", "applied_ops", "ns_chunks", "snapshots", "horizons",
              "members", "links")


def remove_user(tx: Tx, name: str) -> int:
    """Remove the user: tokens, memberships, quota, grants and the namespaces they own
    with all their history; how many namespaces went. Their chunks stay until gc finds
    nothing names them. Refused if a namespace they own has another member."""
    uid = user_id(tx, name)
    owned = [int(r[0]) for r in
             tx.execute("SELECT id FROM namespaces WHERE owner = ? ORDER BY id", (uid,))]
    for ns in owned:
        tx.lock_namespace(ns)  # no commit to it in flight, none after
    shared = tx.execute(
        "SELECT m.ns FROM members m JOIN namespaces n ON n.id = m.ns"
        " WHERE n.owner = ? AND m.user_id <> ?",
        (uid, uid),
    )
    if shared:
        raise Conflict(
            f"user {name} owns namespace {shared[0][0]}, shared with others: unshare it first"
        )
    revoke_user(tx, uid)
    for ns in owned:
        for table in _NS_TABLES:
            tx.execute(f"DELETE FROM {table} WHERE ns = ?", (ns,))
        tx.execute("DELETE FROM namespaces WHERE id = ?", (ns,))
    tx.execute("DELETE FROM members WHERE user_id = ?", (uid,))
    for table in ("links", "uploads"):  # links they made in others' folders; uploads
        tx.execute(f"DELETE FROM {table} WHERE user_id = ?", (uid,))
    tx.execute("DELETE FROM chunk_grants WHERE user_id = ?", (uid,))
    tx.execute("DELETE FROM quotas WHERE user_id = ?", (uid,))
    tx.execute("DELETE FROM users WHERE id = ?", (uid,))
    # Chunks no longer named by the removed namespaces change what others' uploads
    # count for (quota.USAGE_SQL): every kept total is computed again when needed.
    quota.forget(tx)
    return len(owned)
