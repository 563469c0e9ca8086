"""The reconciler: what the device's local changes mean on top of the server's tree.

The device keeps three things (``cache``): the *remote* tree (the server's state as of
the changes feed's cursor: written only by the feed), the *journal* (each local change
as the user made it, with a snapshot of what it was based on) and the *view* (what the
mount shows). The view is, by definition, the remote tree with the journal replayed
over it by the rules below; ``replay`` computes it. The uploader sends the same
replay's operations, each with the ``base`` revision the remote tree gives, so what the
server applies is exactly what the device shows. When the server moves on (another
device committed), the journal is replayed over the new remote tree: a remote change
to an entry with pending local changes is merged, never skipped, and nothing is
written over a pending change. Every rule depends only on the remote tree and the
record, so the outcome is the same on every device whichever replays first.

Conflict rules ("here" is the change being replayed, "elsewhere" what the server has
that this change was not based on):

    ================================= =============================================
    here / elsewhere                  outcome
    ================================= =============================================
    edit / edit                       the server's version keeps the name; ours
                                      becomes ``name (conflicted copy from DEVICE
                                      YYYY-MM-DD HHMMSS).ext`` beside it
    edit / the same bytes written     nothing to do
    edit / delete                     our version is kept as a conflicted copy
                                      where the file was
    edit / rename, chmod, touch       both apply (the edit goes to the moved file)
    delete / edit or rename           the delete is dropped: the file stays
    delete / chmod, touch             the delete applies
    delete folder / created inside    the delete is dropped: the folder stays with
                                      what was added (our deletes inside it hold)
    rename / rename                   the later commit wins (a log line says so)
    rename / delete                   the file is kept at its new name (a new entry
                                      with the same content; a folder comes back
                                      empty: its children were deleted elsewhere)
    rename over y / y edited          y's version moves aside as a conflicted copy;
                                      ours takes the name
    rename over y / y renamed away    ours takes the name; y stays where it went
    rename over y / y deleted         ours takes the name
    rename over y / name taken anew   ours takes a conflicted-copy name
    move / move making a cycle        ours is dropped (the first one wins)
    anything placed into a folder     goes to the nearest of that folder's former
    deleted elsewhere                 ancestors that still exists (or the top)
    create / create of one name       the first keeps the name; ours becomes a
                                      conflicted copy
    chmod, touch / chmod, touch       field by field; the later commit wins
    chmod, touch / delete             dropped
    ================================= =============================================

A change the server refuses although it was planned on the latest remote tree is
re-planned after the device catches up with the feed; refused ``MAX_TRIES`` times, it
is given up (content it carries is kept as a conflicted copy) and ``loft status`` shows
it. The journal always drains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend import protocol as p
from cache.records import PENDING, Entry, Record, WireOp, same_content
from fs.conflicts import conflicted_name, derived_id
from fs.virtual import Virtual, apply_op

MAX_TRIES = 3
"""Refusals of one re-planned change before it is given up."""


@dataclass
class Note:
    """A decision worth telling the user about (a conflict rule that applied)."""

    rule: str
    name: str
    detail: str


@dataclass
class Step:
    """What one journal record comes to on the current remote tree."""

    seq: int
    ops: list[WireOp] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    acked: bool = False

    @property
    def sendable(self) -> bool:
        return all(op.get("base", 0) != PENDING and (
            not isinstance(op.get("replace"), dict) or op["replace"]["base"] != PENDING
        ) for op in self.ops)


class Planner:
    """Replays journal records over a ``Virtual`` tree, one ``Step`` each."""

    def __init__(
        self, tree: Virtual, device: str, sent: dict[int, list[WireOp]] | None = None
    ) -> None:
        self.tree = tree
        self.device = device
        self.sent = sent or {}
        """The operations of the commit in flight, by the record they carry: the
        server may have applied them already (their echo may be in the remote tree),
        so they are laid over it as sent, never planned again until answered."""
        self.alias: dict[str, str] = {}
        self.placed: dict[str, tuple[str, str]] = {}
        """Where this device's own changes (as planned) put an entry last: a place the
        reconciler chose, such as a conflicted name, is no change made elsewhere."""

    def replay(self, records: list[tuple[int, Record]]) -> list[Step]:
        return [self.plan(seq, record) for seq, record in records]

    def plan(self, seq: int, record: Record) -> Step:
        step = Step(seq)
        if record["acked"] is not None:
            step.acked = True
            for op, rev in record["effect"]:
                apply_op(self.tree, op, rev)
                self._note_place(op)
            return step
        if seq in self.sent:
            step.acked = True  # in flight: the uploader resends it as it is
            for op in self.sent[seq]:
                apply_op(self.tree, op, PENDING)
                self._note_place(op)
            return step
        op = self._resolve(record["op"])
        rule = getattr(self, f"_{op['op']}")
        rule(step, op, record)
        self.alias.update(step.aliases)
        return step

    # --- helpers -------------------------------------------------------------------

    def _resolve(self, op: WireOp) -> WireOp:
        op = dict(op)
        for key in ("entry", "parent"):
            if key in op:
                op[key] = self.alias.get(op[key], op[key])
        return op

    def _emit(self, step: Step, op: WireOp) -> None:
        if op["op"] not in ("create", "mkdir"):
            current = self.tree.get(op["entry"])
            op["base"] = current["rev"] if current is not None else PENDING
        apply_op(self.tree, op, PENDING)
        self._note_place(op)
        step.ops.append(op)

    def _note_place(self, op: WireOp) -> None:
        if op["op"] in ("create", "mkdir", "rename"):
            self.placed[op["entry"]] = (op["parent"], op["name"])

    def _place(self, folder: str, record: Record) -> str:
        """``folder`` if it is still a folder, else its nearest surviving ancestor."""
        for candidate in [folder, *record["anc"]]:
            candidate = self.alias.get(candidate, candidate)
            if self.tree.is_folder(candidate):
                return candidate
        return p.ROOT_ID

    def _free(self, folder: str, name: str, record: Record, copy: bool = False) -> str:
        """``name`` if it is free in ``folder`` (and ``copy`` is not asked), else the
        first free conflicted-copy name."""
        if not copy and self.tree.child(folder, name) is None:
            return name
        number = 1
        while True:
            candidate = conflicted_name(name, self.device, record["time"], number)
            if self.tree.child(folder, candidate) is None:
                return candidate
            number += 1

    def _copy(self, step: Step, record: Record, source: WireOp, where: Entry, rule: str) -> None:
        """Our content goes to a new entry beside ``where``, with a conflicted name."""
        op = record["op"]
        snap = record["snap"]
        new = derived_id(op["op_id"], "copy")
        folder = self._place(where["parent"], record)
        name = self._free(folder, where["name"], record, copy=True)
        fields: WireOp = {
            "op": "create", "op_id": derived_id(op["op_id"], "copy-op"), "entry": new,
            "parent": folder, "name": name, "kind": "file",
            "mode": source.get("mode", snap["mode"] if snap else 0o644),
            "mtime": source["mtime"], "size": source["size"], "blocks": source["blocks"],
        }
        step.aliases[op["entry"]] = step.aliases[source["entry"]] = new
        self._emit(step, fields)
        step.notes.append(Note(rule, where["name"], f"our version kept as {name!r}"))

    # --- the rules, one per operation kind --------------------------------------------

    def _create(self, step: Step, op: WireOp, record: Record) -> None:
        if self.tree.get(op["entry"]) is not None:
            return  # already there (applied through another record)
        folder = self._place(op["parent"], record)
        name = self._free(folder, op["name"], record)
        if folder != op["parent"]:
            step.notes.append(Note("placed", op["name"], "its folder was deleted elsewhere"))
        if name != op["name"]:
            step.notes.append(Note("name-taken", op["name"], f"kept as {name!r}"))
        self._emit(step, {**op, "parent": folder, "name": name})

    _mkdir = _create

    def _update(self, step: Step, op: WireOp, record: Record) -> None:
        current = self.tree.get(op["entry"])
        snap = record["snap"]
        if current is None:
            if snap is not None:
                self._copy(step, record, op, snap, "edit-delete")
            return
        if current["kind"] != "file":
            return
        if snap is None or same_content(current, snap):
            self._emit(step, {k: v for k, v in op.items() if k != "base"})
        elif current.get("blocks") != op["blocks"]:
            self._copy(step, record, op, current, "edit-edit")

    def _setattr(self, step: Step, op: WireOp, record: Record) -> None:
        if self.tree.get(op["entry"]) is not None:
            self._emit(step, dict(op))

    def _delete(self, step: Step, op: WireOp, record: Record) -> None:
        current = self.tree.get(op["entry"])
        snap = record["snap"]
        if current is None:
            return
        where = self.placed.get(current["id"]) or (
            (snap["parent"], snap["name"]) if snap is not None else None
        )
        changed = snap is not None and (
            not same_content(current, snap) or (current["parent"], current["name"]) != where
        )
        if changed or (current["kind"] == "dir" and self.tree.has_children(current["id"])):
            step.notes.append(Note("delete-changed", current["name"], "changed elsewhere: kept"))
            return
        self._emit(step, dict(op))

    def _rename(self, step: Step, op: WireOp, record: Record) -> None:
        current = self.tree.get(op["entry"])
        snap = record["snap"]
        folder = self._place(op["parent"], record)
        if current is None:
            if snap is not None:
                self._revive(step, op, record, snap, folder)
            return
        if current["kind"] == "dir" and self.tree.inside(current["id"], folder):
            step.notes.append(Note("cycle", current["name"], "moved elsewhere first: kept"))
            return
        name = self._target_name(step, op, record, folder)
        if (current["parent"], current["name"]) == (folder, name):
            return
        if snap is not None and (current["parent"], current["name"]) != (
            snap["parent"], snap["name"]
        ):
            step.notes.append(Note(
                "rename-rename", name,
                f"renamed to {current['name']!r} elsewhere and to {name!r} here; {name!r} wins",
            ))
        out: WireOp = {k: v for k, v in op.items() if k not in ("base", "replace")}
        out.update(parent=folder, name=name)
        victim = self.tree.child(folder, name)
        if victim is not None:
            entry = self.tree.get(victim)
            assert entry is not None
            out["replace"] = {"entry": victim, "base": entry["rev"]}
        self._emit(step, out)

    def _target_name(self, step: Step, op: WireOp, record: Record, folder: str) -> str:
        """The name a rename or revival takes in ``folder``; a victim it may replace is
        left in place only if it is the one the user replaced, unchanged."""
        name: str = op["name"]
        holder = self.tree.child(folder, name)
        if holder is None or holder == op["entry"]:
            return name
        victim = record["victim"]
        entry = self.tree.get(holder)
        assert entry is not None
        if victim is not None and holder == victim["id"]:
            busy = entry["kind"] == "dir" and self.tree.has_children(holder)
            if same_content(entry, victim) and not busy:
                return name  # replaced as the user did
            aside = self._free(folder, name, record, copy=True)
            self._emit(step, {
                "op": "rename", "op_id": derived_id(record["op"]["op_id"], "aside"),
                "entry": holder, "parent": folder, "name": aside,
            })
            step.notes.append(Note("rename-over-changed", name, f"theirs kept as {aside!r}"))
            return name
        taken = self._free(folder, name, record)
        step.notes.append(Note("name-taken", name, f"kept as {taken!r}"))
        return taken

    def _revive(
        self, step: Step, op: WireOp, record: Record, snap: Entry, folder: str
    ) -> None:
        """Renamed here, deleted elsewhere: the entry comes back as a new one where it
        was moved to (a folder empty: what it held was deleted elsewhere)."""
        new = derived_id(record["op"]["op_id"], "revive")
        name = self._target_name(step, {**op, "entry": new}, record, folder)
        fields: WireOp = {
            "op": "mkdir" if snap["kind"] == "dir" else "create",
            "op_id": derived_id(record["op"]["op_id"], "revive-op"), "entry": new,
            "parent": folder, "name": name, "mode": snap["mode"], "mtime": snap["mtime"],
        }
        if snap["kind"] != "dir":
            fields.update(kind=snap["kind"], size=snap["size"])
            if snap["kind"] == "file":
                fields["blocks"] = snap.get("blocks", [])
            else:
                fields["target"] = snap.get("target", "")
        victim = self.tree.child(folder, name)
        if victim is not None:  # the user's victim, unchanged: it goes first
            entry = self.tree.get(victim)
            assert entry is not None
            self._emit(step, {"op": "delete", "op_id": derived_id(
                record["op"]["op_id"], "revive-victim"), "entry": victim})
        step.aliases[op["entry"]] = step.aliases[record["op"]["entry"]] = new
        self._emit(step, fields)
        step.notes.append(Note("rename-delete", name, "deleted elsewhere: kept"))


def rewrite(
    record: Record, aliases: dict[str, str], moved: dict[str, tuple[tuple[str, str], Entry]]
) -> Record:
    """A later record, once the commit of earlier ones is acknowledged: it names the
    entries that took over local content (``aliases``: its ``op`` and ``anc``), and a
    snapshot at the place the user asked for an entry the server put elsewhere
    (``moved``: a conflicted name, a surviving folder) shows where it really went, so
    the reconciler does not take that move for a change made elsewhere."""
    op = dict(record["op"])
    for key in ("entry", "parent"):
        if key in op and op[key] in aliases:
            op[key] = aliases[op[key]]
    out: dict[str, Any] = dict(record)
    out["op"] = op
    out["anc"] = [aliases.get(a, a) for a in record["anc"]]
    snap = record["snap"]
    if snap is not None and snap["id"] in moved:
        asked, placed = moved[snap["id"]]
        if (snap["parent"], snap["name"]) == asked:
            out["snap"] = {**snap, "parent": placed["parent"], "name": placed["name"]}
    return out  # type: ignore[return-value]
