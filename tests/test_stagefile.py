"""A staging file (``fs.stagefile``) reads as a sparse file on disk does, in memory or
after it moved to disk, and its memory stays within the mount's budget.

Random writes, truncates and reads run on a ``StagingFile`` and on a plain file
opened beside it (the oracle: what the kernel does with the same calls); the tiny
per-file limit makes them cross from memory to disk often.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fs.stagefile import Budget, StagingFile

PER_FILE = 64

ops = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "truncate", "read", "fileno"]),
        st.integers(0, 3 * PER_FILE),
        st.integers(0, PER_FILE),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 2 * PER_FILE), steps=ops)
@example(start=0, steps=[("write", 1, 0)])  # writing nothing past the end extends nothing
def test_a_staging_file_reads_as_a_file_on_disk_does(
    start: int, steps: list[tuple[str, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        budget = Budget(limit=2 * PER_FILE, per_file=PER_FILE)
        staged = StagingFile(root, budget, start)
        oracle = os.open(root / "oracle", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            assert staged.in_memory == (start <= PER_FILE)
            os.ftruncate(oracle, start)
            for n, (op, offset, length) in enumerate(steps):
                data = bytes([n % 255 + 1]) * length
                if op == "write":
                    assert staged.pwrite(data, offset) == os.pwrite(oracle, data, offset)
                elif op == "truncate":
                    staged.truncate(offset)
                    os.ftruncate(oracle, offset)
                elif op == "read":
                    assert staged.pread(length, offset) == os.pread(oracle, length, offset)
                else:
                    fd = staged.fileno()
                    assert not staged.in_memory
                    assert os.pread(fd, 1 << 12, 0) == os.pread(oracle, 1 << 12, 0)
                size = os.fstat(oracle).st_size
                assert staged.size() == size
                assert staged.pread(size + 8, 0) == os.pread(oracle, size + 8, 0)
                if staged.in_memory:
                    assert size <= PER_FILE
                    assert staged.disk_bytes() == 0
            assert budget.used == (PER_FILE if staged.in_memory else 0)
        finally:
            staged.close()
            os.close(oracle)
        assert budget.used == 0
        assert [p.name for p in root.iterdir()] == ["oracle"]  # no staging file has a name


def test_files_past_the_budget_start_on_disk_and_give_it_back_closed(tmp_path: Path) -> None:
    budget = Budget(limit=2 * PER_FILE, per_file=PER_FILE)
    files = [StagingFile(tmp_path, budget, 0) for _ in range(3)]
    assert [f.in_memory for f in files] == [True, True, False]
    files[0].close()
    again = StagingFile(tmp_path, budget, PER_FILE)
    assert again.in_memory
    too_big = StagingFile(tmp_path, budget, PER_FILE + 1)  # room, but larger than a file may be
    assert not too_big.in_memory
    for f in [*files[1:], again, too_big]:
        f.close()
    assert budget.used == 0
