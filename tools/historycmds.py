"""The commands of the past: ``loft versions``, ``loft restore``, ``loft snapshot``.

They talk to the server directly, so they work from a device with or without a
mount; a mount shows what they change within a second, like any other commit.
Times are UTC, written without colons (``2026-12-02T073000Z``); ``--at`` also takes
``2026-12-02T07:30:00Z`` or a day (``2026-12-02``: its last second).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from backend import protocol as p
from backend.errors import BadRequest
from backend.text import printable
from tools.home import home_dir, load_device
from tools.mountcmds import human
from tools.restore import Past


def _instant(text: str) -> int:
    when = p.parse_instant(text)
    if when is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use 2026-12-02T073000Z, 2026-12-02T07:30:00Z or 2026-12-02"
        )
    return when


def _with_past(args: argparse.Namespace, body: Callable[[Past], Awaitable[None]]) -> None:
    device = load_device(home_dir(args.home))

    async def run() -> None:
        async with device.client() as client:
            await body(Past(client, device.root_ns))

    trio.run(run)


def _version_line(version: dict[str, Any]) -> str:
    when = p.format_instant(version["committed"])
    if version["deleted"]:
        what = "deleted"
    elif version["kind"] == "dir":
        what = "folder"
    elif version["kind"] == "symlink":
        what = f"-> {printable(version['target'])}"
    else:
        what = human(version["size"])
    return f"{when}  {what:>10}  {printable(version['device']):<16}  rev {version['seq']}"


def cmd_versions(args: argparse.Namespace) -> None:
    async def body(past: Past) -> None:
        for version in reversed(await past.versions(args.path)):
            print(_version_line(version))

    _with_past(args, body)


def cmd_restore(args: argparse.Namespace) -> None:
    if args.at is not None and args.rev is not None:
        raise BadRequest("give --at or --rev, not both")

    async def body(past: Past) -> None:
        version, seq = await past.pick(args.path, args.at, args.rev)
        target = args.to or args.path
        plan = await past.restore(version, seq, target)
        when = p.format_instant(version["committed"])
        if not plan.ops:
            print(f"{target} is already as it was at {when} (rev {version['seq']}): nothing to do")
            return
        what = (f"{plan.files} file(s) in {plan.folders} folder(s)" if version["kind"] == "dir"
                else human(version["size"]) if version["kind"] == "file" else "a symlink")
        print(f"restored {target} as of {when} (rev {version['seq']}): {what},"
              f" {len(plan.ops)} change(s); undo with: loft versions {target}")

    _with_past(args, body)


def cmd_snapshot_create(args: argparse.Namespace) -> None:
    async def body(past: Past) -> None:
        made = await past.history.snapshot(args.name, args.path)
        when = p.format_instant(made["time"]) if made["time"] is not None else "the start"
        print(f"snapshot {made['name']}: {args.path} as of {when} (rev {made['seq']});"
              f" browse it at .versions/{made['name']}")

    _with_past(args, body)


def cmd_snapshot_list(args: argparse.Namespace) -> None:
    async def body(past: Past) -> None:
        snaps = await past.history.snapshots()
        if not snaps:
            print("no snapshots")
        for snap in snaps:
            when = p.format_instant(snap["time"]) if snap["time"] is not None else "-"
            print(f"{snap['name']:<24}  {when}  rev {snap['seq']}")

    _with_past(args, body)


def cmd_snapshot_delete(args: argparse.Namespace) -> None:
    async def body(past: Past) -> None:
        await past.history.drop_snapshot(args.name)
        print(f"deleted snapshot {args.name} (retention may now expire what it kept)")

    _with_past(args, body)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, fn: Callable[[argparse.Namespace], None],
                help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(fn=fn)
        return sub

    sub = command("versions", cmd_versions,
                  "list every version of a path, newest first (folders and deleted ones too)")
    sub.add_argument("path", help="a workspace path, e.g. /docs/plan.txt")
    sub = command("restore", cmd_restore,
                  "bring back a file or folder (deleted ones too) as a new version")
    sub.add_argument("path", help="a workspace path, e.g. /docs")
    sub.add_argument("--at", type=_instant, help="as it was then (UTC), e.g. 2026-12-02T073000Z")
    sub.add_argument("--rev", type=int, help="the revision `loft versions` shows")
    sub.add_argument("--to", help="restore to this path instead (its folder is made if missing)")
    snapshot = command("snapshot", lambda a: None,
                       "named points in time that retention never expires")
    actions = snapshot.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)
    sub = actions.add_parser("create", help="name the workspace's current state (or a folder's)")
    sub.set_defaults(fn=cmd_snapshot_create)
    sub.add_argument("name")
    sub.add_argument("path", nargs="?", default="/", help="the folder it covers (default: /)")
    sub = actions.add_parser("list", help="list the snapshots")
    sub.set_defaults(fn=cmd_snapshot_list)
    sub = actions.add_parser("delete", help="delete a snapshot (not the files it shows)")
    sub.set_defaults(fn=cmd_snapshot_delete)
    sub.add_argument("name")
