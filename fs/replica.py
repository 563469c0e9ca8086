"""The device's replica: remote tree, journal and view kept consistent in LMDB.

Every method here is a job for the cache's ``Writer`` (a function of one write
transaction, run on the writer's thread): a remote change, a local change, an
acknowledged or refused commit each update the remote tree or the journal and then
the view, in the same transaction, so after a crash the three agree. The view is the
remote tree with the journal replayed over it (``fs.reconcile``); only the entries a
change can touch are rewritten. Each method returns the ``ViewChange`` list the mount
needs for the kernel's caches, which the caller hands to the invalidator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from backend import protocol as p
from backend.cursor import Position, reached
from cache.env import Txn
from cache.records import (
    PENDING,
    Batch,
    ConflictNote,
    Entry,
    Record,
    WireOp,
    new_record,
    same_content,
    settled,
)
from cache.store import Cache
from fs.batching import full, held, merge
from fs.conflicts import conflicted_name, derived_id
from fs.folding import fold_into_last
from fs.reconcile import MAX_TRIES, Planner, Step, rewrite
from fs.virtual import Virtual

log = logging.getLogger("loft.sync")


@dataclass
class ViewChange:
    """An entry of the view changed for a reason other than this mount's own call."""

    entry_id: str
    ino: int | None
    old: Entry | None
    new: Entry | None

    @property
    def content(self) -> bool:
        return self.old is not None and (
            self.new is None or any(self.old.get(k) != self.new.get(k) for k in ("blocks",
                                                                             "target", "size"))
        )


def _visible(entry: Entry | None) -> dict[str, Any] | None:
    return None if entry is None else {k: v for k, v in entry.items() if k != "rev"}


def _shown(tree: Virtual, folder: str, memo: dict[str, bool]) -> bool:
    """Whether ``folder`` is a folder the view shows: it and every folder above it."""
    path: list[str] = []
    current = folder
    while current not in memo and len(path) < 4096:
        path.append(current)
        entry = tree.get(current)
        if entry is None or entry["kind"] != "dir":
            break
        current = entry["parent"]
    answer = memo.get(current, False)
    for step in path:
        memo[step] = answer
    return answer


def touched(record: Record) -> set[str]:
    op = record["op"]
    ids = {op["entry"]}
    if record["victim"] is not None:
        ids.add(record["victim"]["id"])
    for wire, _ in record["effect"]:
        ids.add(wire["entry"])
        if isinstance(wire.get("replace"), dict):
            ids.add(wire["replace"]["entry"])
    return ids


class Replica:
    def __init__(self, cache: Cache, device: str) -> None:
        self.cache = cache
        self.device = device
        self._sent_upto = int(cache.env.meta("journal_seq", 0))
        """No journal record after this one has been in a commit sent: only a record
        up to it may be in flight (the batch, a large value, is read only then). Any
        record there at start may be; ``build_batch`` raises it, nothing lowers it."""

    # --- the view ----------------------------------------------------------------------

    def replay(self, txn: Txn) -> tuple[Virtual, list[Step], list[tuple[int, Record]]]:
        records = list(self.cache.journal.records(txn))
        tree = Virtual(self.cache.remote, txn)
        inflight: Batch | None = self.cache.env.meta_get(txn, "inflight")
        sent: dict[int, list[WireOp]] = {}
        if inflight:
            for seq, indices in inflight["covers"]:
                sent[int(seq)] = [inflight["ops"][i] for i in indices]
        return tree, Planner(tree, self.device, sent).replay(records), records

    def refresh(self, txn: Txn, dirty: set[str]) -> list[ViewChange]:
        """Rewrite the view for ``dirty`` and whatever the journal touches."""
        tree, _, records = self.replay(txn)
        view = self.cache.view
        updates: list[tuple[str, Entry | None, Entry | None]] = []
        for _, record in records:  # a change that came to nothing still moved the view
            dirty = dirty | touched(record)
        # What the last replay laid over the remote tree (an entry hidden under a name
        # an acknowledged change took, say) is looked at again, wherever it went.
        dirty |= set(self.cache.env.meta_get(txn, "overlay", []))
        self.cache.env.meta_put(txn, "overlay", sorted(tree.changed))
        shown: dict[str, bool] = {p.ROOT_ID: True}
        todo, seen = list(dirty | set(tree.changed)), {p.ROOT_ID}
        while todo:
            entry_id = todo.pop()
            if entry_id in seen:
                continue
            seen.add(entry_id)
            new = tree.get(entry_id)
            if new is not None and not _shown(tree, new["parent"], shown):
                new = None  # under a folder out of sight for now
            old = view.get(txn, entry_id)
            if old != new:
                updates.append((entry_id, old, new))
            was_folder = old is not None and old["kind"] == "dir"
            if was_folder != (new is not None and new["kind"] == "dir"):
                # A folder comes into sight or goes out of it: so does what it holds.
                todo.extend(child for _, child in view.children(txn, entry_id))
                todo.extend(child for _, child in self.cache.remote.children(txn, entry_id))
                todo.extend(k for k, e in tree.changed.items() if e and e["parent"] == entry_id)
        for entry_id, old, _ in updates:
            if old is not None:
                view.drop(txn, entry_id)
        for _, _, new in updates:
            if new is not None:
                view.put(txn, new)
        return [
            ViewChange(entry_id, self.cache.known_inode(txn, entry_id), old, new)
            for entry_id, old, new in updates
            if _visible(old) != _visible(new)
        ]

    # --- remote changes --------------------------------------------------------------

    def apply_feed(
        self, txn: Txn, since: Position, changes: list[Entry], cursor: Position
    ) -> list[ViewChange] | None:
        """Apply a page of the changes feed read from ``since``; None if the cursor
        moved meanwhile (another reader applied it: this page is stale)."""
        if self.cache.env.meta_get(txn, "cursor") != since:
            return None
        dirty: set[str] = set()
        echo = True
        for change in changes:
            record: dict[str, Any] = dict(change)
            if record.pop("deleted", False):
                gone = self.cache.remote.drop(txn, record["id"])
                if gone is not None and "share" in gone:  # unshared or left: all of it
                    dirty |= self.cache.remote.drop_below(txn, record["id"])
                echo = echo and self.cache.view.get(txn, record["id"]) is None
            else:
                self.cache.remote.put(txn, record)  # type: ignore[arg-type]
                echo = echo and _visible(self.cache.view.get(txn, record["id"])) == _visible(
                    record  # type: ignore[arg-type]
                )
            dirty.add(record["id"])
        self.cache.env.meta_put(txn, "cursor", cursor)
        echoed = self._drop_echoed(txn, cursor)
        if echo and not echoed:  # our own commits, not yet acknowledged: shown already
            return []
        # The records the feed echoed no longer lay anything over the remote tree: what
        # they hid or moved (a victim, a name the server gave another way) shows again.
        return self.refresh(txn, dirty | echoed)

    def bootstrap(self, txn: Txn, entries: list[Entry], seq: Position) -> list[ViewChange]:
        """The whole remote tree at ``seq``, replacing what the device knew."""
        remote = self.cache.remote
        dirty = {entry["id"] for entry in remote.all(txn)}
        dirty |= {entry["id"] for entry in self.cache.view.all(txn)}
        root = remote.get(txn, p.ROOT_ID)
        for name in ("rentries", "rchildren"):
            txn.drop(self.cache.env.db[name], delete=False)
        if root is not None:
            remote.put(txn, root)
        for entry in entries:
            if entry["id"] != p.ROOT_ID:
                remote.put(txn, entry)
                dirty.add(entry["id"])
        self.cache.env.meta_put(txn, "cursor", seq)
        dirty |= self._drop_echoed(txn, seq)
        return self.refresh(txn, dirty)

    def _drop_echoed(self, txn: Txn, cursor: Position) -> set[str]:
        """Drop the records the feed has passed. Commits are built from the head of the
        journal, so the acknowledged records are its first ones, oldest commit first:
        the scan ends at the first record still waiting, not at the journal's end."""
        dirty: set[str] = set()
        echoed: list[int] = []
        for seq, record in self.cache.journal.records(txn):
            if record["acked"] is None or not reached(cursor, record["acked"]):
                break
            echoed.append(seq)
            dirty |= touched(record)
        for seq in echoed:
            self.cache.journal.drop(txn, seq)
        return dirty

    # --- local changes (the FUSE layer's writes) ----------------------------------------

    def record(
        self, txn: Txn, op: WireOp, snap: Entry | None, folder: str, victim: Entry | None = None
    ) -> None:
        """Journal a change the caller already made to the view; ``folder`` is where the
        change puts the entry (its ancestors go into the record)."""
        if victim is None and fold_into_last(self.cache, txn, op, snap, self._sent_upto):
            return
        anc = self.cache.view.ancestors(txn, folder)
        self.cache.journal.append(txn, new_record(op, snap, anc, time.time(), victim))

    def record_update(
        self, txn: Txn, op: WireOp, base: Entry
    ) -> list[ViewChange] | None:
        """Journal new content of a file whose writer started from ``base``; None if the
        entry is gone from the view (unlinked meanwhile: nothing to commit)."""
        current = self.cache.view.get(txn, op["entry"])
        if current is None:
            return None
        self.record(txn, op, base, current["parent"])
        if same_content(current, base):
            current["size"], current["blocks"] = op["size"], op["blocks"]
            current["mtime"], current["rev"] = op["mtime"], PENDING
            self.cache.view.rewrite(txn, current)
            return []
        return self.refresh(txn, {op["entry"]})  # changed elsewhere while being written

    # --- the uploader's side --------------------------------------------------------------

    def build_batch(
        self, txn: Txn, writing: frozenset[str] = frozenset()
    ) -> tuple[Batch | None, list[ConflictNote]]:
        """The commit to send next: the one in flight if there is one, else a new one
        from the head of the journal (persisted before it is sent). It ends before the
        create of a file in ``writing`` (still being written) made less than ``HOLD``
        seconds ago."""
        inflight: Batch | None = self.cache.env.meta_get(txn, "inflight")
        if inflight:
            return inflight, []
        # Planned record by record, and only as far as the batch goes: what comes after
        # it in the journal cannot change how its records are sent.
        planner = Planner(Virtual(self.cache.remote, txn), self.device)
        batch = Batch(ops=[], covers=[], aliases={})
        found: list[ConflictNote] = []
        created: dict[str, int] = {}
        busy: set[str] = set()
        for seq, record in self.cache.journal.records(txn):
            step = planner.plan(seq, record)
            if step.acked:
                continue
            if full(batch, step):
                break
            if merge(batch, step, created):
                batch["covers"].append([seq, []])
                continue
            ids = {op["entry"] for op in step.ops}
            ids |= {o["replace"]["entry"] for o in step.ops if "replace" in o}
            if not step.sendable or ids & busy or held(step, record, writing):
                break
            first = len(batch["ops"])
            for op in step.ops:
                if op["op"] in ("create", "mkdir", "update", "setattr"):
                    created[op["entry"]] = len(batch["ops"])
                batch["ops"].append(op)
            busy |= ids
            batch["covers"].append([seq, list(range(first, len(batch["ops"])))])
            batch["aliases"].update(step.aliases)
            if not step.notes:
                continue
            path = self.cache.view.path_of(txn, record["op"].get("parent", p.ROOT_ID)) or "/"
            found.extend(
                ConflictNote(time=time.time(), path=path.rstrip("/") + "/" + note.name,
                             kind=note.rule, detail=note.detail)
                for note in step.notes
            )
        for conflict in found:
            self.cache.note_conflict(txn, conflict)
        if not batch["covers"]:
            return None, found
        if not batch["ops"]:  # only changes with nothing left to do: done with them
            done = []
            for seq, _ in batch["covers"]:
                done.append(self.cache.journal.get(txn, seq))
                self.cache.journal.drop(txn, seq)
            self.cache.release_chunks(txn, [r for r in done if r is not None], [])
            return None, found
        self.cache.env.meta_put(txn, "inflight", batch)
        self._sent_upto = max(self._sent_upto, *(seq for seq, _ in batch["covers"]))
        return batch, found

    def acked(self, txn: Txn, batch: Batch, answer: dict[str, Any]) -> list[ViewChange]:
        """The server applied ``batch``: its records wait for the feed to echo it. A
        record folded into an earlier operation of the batch (``batching.merge``) has
        nothing of its own to lay over the tree until then: it goes now, not written
        back (a file fsync'd often makes many, each with the file's whole block list)."""
        results = answer["results"]
        last = 0
        moved: dict[str, tuple[tuple[str, str], Entry]] = {}
        covered: list[Record] = []
        for seq, indices in batch["covers"]:
            record = self.cache.journal.get(txn, seq)
            last = max(last, seq)
            if record is None:
                continue
            covered.append(record)
            if not indices:
                self.cache.journal.drop(txn, seq)
                continue
            asked = record["op"]
            for i in indices:
                sent = batch["ops"][i]
                if sent["entry"] == asked["entry"] and "name" in sent and "name" in asked:
                    place = (asked["parent"], asked["name"])
                    if (sent["parent"], sent["name"]) != place:
                        moved[sent["entry"]] = (place, sent)
            effect = [[batch["ops"][i], int(results[i]["rev"])] for i in indices]
            self.cache.journal.put(txn, seq, settled(record, answer["seq"], effect))
        if batch["aliases"] or moved:
            for seq, record in list(self.cache.journal.records(txn)):
                if seq > last:
                    self.cache.journal.put(txn, seq, rewrite(record, batch["aliases"], moved))
        self.cache.env.meta_put(txn, "inflight", None)
        self.cache.release_chunks(txn, covered, batch["ops"])
        # The feed may have brought the commit already, while it was being answered (a
        # reply lost and the commit sent again, say), and changes made after it
        # elsewhere, which the batch in flight was laid over: the records it passed no
        # longer hide them.
        cursor = self.cache.env.meta_get(txn, "cursor")
        if cursor is not None and (echoed := self._drop_echoed(txn, cursor)):
            return self.refresh(txn, echoed)
        return []

    def refused(self, txn: Txn, batch: Batch, index: int, why: str) -> list[ViewChange]:
        """The server refused operation ``index`` of ``batch`` (nothing of it applied).
        Its record is re-planned once the device has caught up; refused ``MAX_TRIES``
        times, it is given up."""
        self.cache.env.meta_put(txn, "inflight", None)
        culprit = next(
            (seq for seq, indices in batch["covers"] if index in indices),
            batch["covers"][0][0],
        )
        record = self.cache.journal.get(txn, culprit)
        if record is None:
            return []
        record["tries"] += 1
        dirty = touched(record)
        if record["tries"] < MAX_TRIES:
            self.cache.journal.put(txn, culprit, record)
        else:
            self._give_up(txn, culprit, record, why)
            self.cache.release_chunks(txn, [record], [])  # unless its rescued copy names them
        return self.refresh(txn, dirty)

    def _give_up(self, txn: Txn, seq: int, record: Record, why: str) -> None:
        op = record["op"]
        self.cache.journal.drop(txn, seq)
        path = self.cache.view.path_of(txn, op["entry"]) or str(op.get("name", op["entry"]))
        log.error("gave up %s of %s after %d refusals: %s", op["op"], path, record["tries"], why)
        self.cache.note_conflict(txn, ConflictNote(
            time=time.time(), path=path, kind="given-up", detail=f"{op['op']}: {why}"))
        if "blocks" not in op or record["tries"] > MAX_TRIES:
            return
        # The content it carries goes up as a conflicted copy at the top, once.
        snap = record["snap"]
        name = conflicted_name(op.get("name") or (snap["name"] if snap else "file"),
                               self.device, record["time"])
        rescue: WireOp = {
            "op": "create", "op_id": derived_id(op["op_id"], "rescue-op"),
            "entry": derived_id(op["op_id"], "rescue"), "parent": p.ROOT_ID, "name": name,
            "kind": "file", "mode": op.get("mode", snap["mode"] if snap else 0o644),
            "mtime": op["mtime"], "size": op["size"], "blocks": op["blocks"],
        }
        copy = new_record(rescue, None, [], record["time"])
        copy["tries"] = MAX_TRIES  # refused once more, it is dropped for good
        self.cache.journal.append(txn, copy)
