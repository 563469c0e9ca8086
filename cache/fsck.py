"""Checking a device's own state: ``loft fsck --home DIR``.

Read-only; one line per problem. What it checks:

- each tree (the view and the remote tree): every entry but the root has one name
  key that points back at it, every name key points at an entry holding that name,
  every parent is a live folder, no entry is its own ancestor;
- the view's count of shared folders (``view_shares``) is the number it holds;
- inode numbers: the two indexes are each other's inverse;
- the journal: every record has the fields of ``cache.records.Record``, an
  acknowledged one has its effect; the chunks of changes not yet acknowledged are in
  the cache (else they could never be uploaded);
- pending chunks: present and matching their ids;
- the batch in flight: well-formed, naming journal records that exist.

``fs.fsck`` runs these and adds what needs the reconciler (the view is the journal
replayed over the remote tree); ``loft fsck --home`` calls it.
"""

from __future__ import annotations

from backend import protocol as p
from cache.env import Q, Txn
from cache.records import Record
from cache.store import Cache
from cache.tree import Tree

RECORD_KEYS = set(Record.__annotations__)


def check_tree(txn: Txn, tree: Tree, label: str) -> list[str]:
    problems: list[str] = []
    entries = {entry["id"]: entry for entry in tree.all(txn)}
    if p.ROOT_ID not in entries:
        problems.append(f"{label}: the root entry is missing")
    for entry_id, entry in entries.items():
        if entry_id == p.ROOT_ID:
            continue
        holder = tree.child(txn, entry["parent"], entry["name"])
        if holder != entry_id:
            problems.append(
                f"{label}: {entry_id} ({entry['name']!r}) is not indexed under its name"
                f" (the name holds {holder})"
            )
        parent = entries.get(entry["parent"])
        if parent is None or parent["kind"] != "dir":
            problems.append(f"{label}: {entry_id} ({entry['name']!r}) has no live parent folder")
        seen = {entry_id}
        current = entry
        while current["id"] != p.ROOT_ID:
            above = entries.get(current["parent"])
            if above is None:
                break
            if above["id"] in seen:
                problems.append(f"{label}: {entry_id} ({entry['name']!r}) is inside a cycle")
                break
            seen.add(above["id"])
            current = above
    for key, value in txn.cursor(db=tree.names):
        folder, _, name = bytes(key).decode().partition("/")
        holder_entry = entries.get(bytes(value).decode())
        if holder_entry is None or (holder_entry["parent"], holder_entry["name"]) != (folder, name):
            problems.append(f"{label}: name {folder}/{name} points at {bytes(value).decode()},"
                            " which does not hold it")
    return problems


def check_shares(txn: Txn, tree: Tree, label: str) -> list[str]:
    counted = tree.shared_folders(txn)
    shared = tree.held_shares(txn)
    if counted != shared:
        return [f"{label}: {counted} shared folders counted, {shared} are"]
    return []


def check_inodes(txn: Txn, cache: Cache) -> list[str]:
    problems: list[str] = []
    for key, value in txn.cursor(db=cache.env.db["inodes"]):
        ino, entry_id = int(Q.unpack(bytes(key))[0]), bytes(value).decode()
        if cache.known_inode(txn, entry_id) != ino:
            problems.append(f"inodes: {ino} names {entry_id}, whose inode is another")
    for key, value in txn.cursor(db=cache.env.db["inode_of"]):
        entry_id, ino = bytes(key).decode(), int(Q.unpack(bytes(value))[0])
        if cache.entry_id(txn, ino) != entry_id:
            problems.append(f"inodes: {entry_id} has inode {ino}, which names another")
    return problems


def check_journal(txn: Txn, cache: Cache) -> list[str]:
    problems: list[str] = []
    seqs: set[int] = set()
    for seq, record in cache.journal.records(txn):
        seqs.add(seq)
        if not isinstance(record, dict) or set(record) != RECORD_KEYS:
            problems.append(f"journal: record {seq} is malformed")
            continue
        op = record["op"]
        if op.get("op") not in p.OP_KINDS or not p.is_entry_id(op.get("entry")):
            problems.append(f"journal: record {seq} holds no valid operation")
        if record["acked"] is not None and not isinstance(record["effect"], list):
            problems.append(f"journal: record {seq} is acknowledged without its effect")
        if record["acked"] is None:
            for cid, _ in op.get("blocks", []):
                if cache.chunks.meta(txn, cid) is None:
                    problems.append(f"journal: record {seq} needs chunk {cid}, not in the cache")
    inflight = cache.env.meta_get(txn, "inflight")
    if inflight:
        if not isinstance(inflight, dict) or set(inflight) != {"ops", "covers", "aliases"}:
            problems.append("inflight: the batch in flight is malformed")
        else:
            for seq, indices in inflight["covers"]:
                if seq not in seqs:
                    problems.append(f"inflight: covers journal record {seq}, which is gone")
                if any(not 0 <= i < len(inflight["ops"]) for i in indices):
                    problems.append(f"inflight: record {seq} names an operation out of range")
    return problems


def check_chunks(txn: Txn, cache: Cache) -> list[str]:
    problems: list[str] = []
    pending = 0
    for key, raw in txn.cursor(db=cache.env.db["chunk_meta"]):
        cid = bytes(key).decode()
        meta = p.decode(bytes(raw))
        pending += meta["size"] if meta["pending"] else 0
        data = txn.get(key, db=cache.env.db["chunks"])
        if data is None:
            problems.append(f"chunks: {cid} is listed but its content is missing")
        elif meta["pending"] and p.chunk_id(bytes(data)) != cid:
            problems.append(f"chunks: pending chunk {cid} does not match its id")
    counted = cache.env.meta_get(txn, "pending_bytes", 0)
    if counted != pending:
        problems.append(f"chunks: {counted} bytes counted as pending, {pending} are")
    return problems


def check_cache(cache: Cache) -> list[str]:
    with cache.read() as txn:
        return [
            *check_tree(txn, cache.view, "view"),
            *check_shares(txn, cache.view, "view"),
            *check_tree(txn, cache.remote, "remote"),
            *check_inodes(txn, cache),
            *check_journal(txn, cache),
            *check_chunks(txn, cache),
        ]

