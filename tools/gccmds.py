"""``loft gc``, and the retention options of ``loft serve``: run on the server's own stores.

``loft gc`` runs one garbage collection pass (``backend.server.gc``) and prints what
it freed, per store; ``--dry-run`` changes nothing and prints what it would free. Bad
durations and policies are one line and exit 1 (``parse_duration``, ``parse_policy``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import trio

from backend.server.gc import DEFAULT_GRACE, DEFAULT_INTERVAL
from backend.server.retention import DEFAULT_POLICY, Policy, parse_duration, parse_policy

Command = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]
StoreArgs = Callable[[argparse.ArgumentParser], None]

POLICY_HELP = (
    f"retention policy, comma-separated AGE:STEP windows (default {DEFAULT_POLICY}:"
    " every version for a day, hourly for a week, daily for a month, weekly for a year)"
)


def _retention_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--retention", default=DEFAULT_POLICY, metavar="POLICY", help=POLICY_HELP)


def serve_options(sub: argparse.ArgumentParser) -> None:
    """``loft serve --retention POLICY --gc-interval DURATION``."""
    _retention_option(sub)
    sub.add_argument(
        "--gc-interval",
        default=f"{DEFAULT_INTERVAL // 3600}h",
        metavar="DURATION",
        help="time between garbage collection passes, e.g. 30m (default 1h; 0: never)",
    )


def serve_settings(args: argparse.Namespace) -> tuple[Policy, int]:
    """The policy and interval ``loft serve`` was given, checked before it starts."""
    policy = parse_policy(args.retention)
    return policy, parse_duration(args.gc_interval, "--gc-interval", zero=True)


def cmd_gc(args: argparse.Namespace) -> None:
    from backend.server.blocks import open_block_store
    from backend.server.gc import collect
    from backend.server.main import open_metadata

    policy = parse_policy(args.retention)
    grace = parse_duration(args.grace, "--grace", zero=True)

    async def run() -> list[str]:
        blocks = open_block_store(args.blocks, Path(args.data))
        try:
            with open_metadata(args.metadata, Path(args.data)) as metadata:
                report = await collect(metadata, blocks, policy, grace, dry_run=args.dry_run)
        finally:
            await blocks.close()
        return report.lines()

    for line in trio.run(run):
        print(line)


def register(command: Command, store_args: StoreArgs) -> None:
    sub = command(
        "gc",
        cmd_gc,
        "apply retention and free the chunks no kept version references (the server's"
        " stores; safe while it runs)",
    )
    store_args(sub)
    sub.add_argument(
        "--grace",
        default=f"{DEFAULT_GRACE // 3600}h",
        metavar="DURATION",
        help="keep chunks uploaded this recently, whose commit may be on its way"
        " (default 1h; 0, 30s, 15m, 2d)",
    )
    _retention_option(sub)
    sub.add_argument("--dry-run", action="store_true", help="change nothing; say what would go")
