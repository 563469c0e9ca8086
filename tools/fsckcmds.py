"""``loft fsck``: a server's stores (``--data``), or else a device's own state
(``--home``). One line per problem and exit 1, else a line that ends in ``clean``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from backend.errors import LocalError
from backend.text import printable
from tools.home import home_dir


def cmd_fsck(args: argparse.Namespace) -> None:
    """Check a server's stores (``--data``), else this device's state (``--home``)."""
    if args.data is None:
        if args.metadata or args.blocks:
            raise LocalError("--metadata and --blocks name a server's stores: give --data too")
        _fsck_device(home_dir(args.home))
        return
    _fsck_server(args)


def _fsck_device(home: Path) -> None:
    """``fs.fsck.check_device``: one line per problem and exit 1, else ``clean``."""
    if not home.is_dir():
        raise LocalError(
            f"{home}: no such device home (give --home DIR, or --data DIR to check a server)"
        )
    from fs.fsck import check_device

    problems = check_device(home)
    for problem in problems:
        print(printable(problem))
    if problems:
        sys.exit(1)
    print("clean")


def _fsck_server(args: argparse.Namespace) -> None:
    from backend.server.blocks import open_block_store
    from backend.server.fsck import check
    from backend.server.main import open_metadata

    async def run() -> bool:
        blocks = open_block_store(args.blocks, Path(args.data))
        try:
            with open_metadata(args.metadata, Path(args.data)) as metadata:
                report = await check(metadata, blocks)
        finally:
            await blocks.close()
        for problem in report.problems:
            print(f"problem: {printable(problem)}")
        verdict = "clean" if report.clean else f"{len(report.problems)} problem(s)"
        print(
            f"checked {report.namespaces} namespace(s), {report.versions} journal record(s),"
            f" {report.entries} entries, {report.chunks} chunk(s): {verdict}"
        )
        return report.clean

    if not trio.run(run):
        sys.exit(1)
