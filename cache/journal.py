"""The write journal: the device's local changes not yet echoed by the server, in
order (sub-database ``journal``, records of ``cache.records.Record``).

A local change updates the view and appends its record in one write transaction, so
the view and the journal never disagree. A record leaves the journal when the changes
feed has passed the commit that carried it (``acked``), when the reconciler finds it
has nothing left to do, or when it is given up after repeated refusals.
"""

from __future__ import annotations

from collections.abc import Iterator

from backend import protocol as p
from cache.env import Env, Q, Txn
from cache.records import Record


class Journal:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.db = env.db["journal"]

    def append(self, txn: Txn, record: Record) -> int:
        seq = self.last(txn) + 1
        self.env.meta_put(txn, "journal_seq", seq)
        txn.put(Q.pack(seq), p.encode(record), db=self.db)
        return seq

    def records(
        self, txn: Txn, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple[int, Record]]:
        """The records in order, oldest first; ``skip``: a sequence not to read."""
        for count, (key, value) in enumerate(txn.cursor(db=self.db)):
            if limit is not None and count >= limit:
                return
            seq = int(Q.unpack(bytes(key))[0])
            if seq != skip:
                yield seq, p.decode(bytes(value))

    def get(self, txn: Txn, seq: int) -> Record | None:
        raw = txn.get(Q.pack(seq), db=self.db)
        return p.decode(bytes(raw)) if raw is not None else None

    def put(self, txn: Txn, seq: int, record: Record) -> None:
        txn.put(Q.pack(seq), p.encode(record), db=self.db)

    def drop(self, txn: Txn, seq: int) -> None:
        txn.delete(Q.pack(seq), db=self.db)

    def size(self, txn: Txn) -> int:
        return self.env.count(txn, "journal")

    def last(self, txn: Txn) -> int:
        """The sequence of the newest record ever appended (0: none yet)."""
        return int(self.env.meta_get(txn, "journal_seq", 0))
