"""Sharing folders with other users: ``loft share``, ``loft unshare``, ``loft shares``,
``loft leave``.

A shared folder is a namespace of its own, mounted in each member's tree
(``backend.server.shares``): the owner keeps it where it was, a member finds it at the
top of their tree and may move it anywhere in their own tree. Roles: ``editor``
(reads and writes, may share it further) and ``viewer`` (reads; the mount refuses
every change with ``EACCES``). Paths are workspace paths (``/docs``), as the mount
shows them.
"""

from __future__ import annotations

import argparse

from backend.client import Client
from backend.text import printable
from tools.devicecmds import with_client
from tools.gccmds import Command


def cmd_share(args: argparse.Namespace) -> None:
    async def body(client: Client) -> None:
        answer = await client.share(args.path, args.user, args.role)
        print(f"shared {printable(args.path)} with {printable(answer['user'])}"
              f" as {answer['role']}")

    with_client(args, body)


def cmd_unshare(args: argparse.Namespace) -> None:
    async def body(client: Client) -> None:
        answer = await client.unshare(args.path, args.user)
        removed = ", ".join(printable(name) for name in answer["removed"]) or "nobody"
        print(f"{printable(args.path)}: no longer shared with {removed}")

    with_client(args, body)


def cmd_leave(args: argparse.Namespace) -> None:
    async def body(client: Client) -> None:
        await client.leave(args.path)
        print(f"left {printable(args.path)}: it is gone from your devices")

    with_client(args, body)


def cmd_shares(args: argparse.Namespace) -> None:
    async def body(client: Client) -> None:
        found = await client.shares()
        if not found:
            print("nothing is shared with you or by you")
        for share in found:
            others = ", ".join(f"{printable(name)} ({role})"
                               for name, role in share["members"].items() if role != "owner")
            owner = "you" if share["role"] == "owner" else printable(share["owner"])
            print(f"{printable(share['path'])}  {share['role']:<6}  owner: {owner}"
                  f"  members: {others or '-'}")

    with_client(args, body)


def add_commands(command: Command) -> None:
    """The sharing commands, made by the CLI's ``command``."""
    sub = command("share", cmd_share,
                  "share a folder with another user, or change their role (run it again)")
    sub.add_argument("path", help="a workspace path, e.g. /projects/plan")
    sub.add_argument("--with", dest="user", required=True, metavar="USER",
                     help="the user to share it with")
    sub.add_argument("--role", choices=("editor", "viewer"), default="editor",
                     help="editor: reads and writes (default); viewer: reads only")
    sub = command("unshare", cmd_unshare,
                  "stop sharing a folder with a user, or with everyone (no --with)")
    sub.add_argument("path", help="the shared folder's workspace path")
    sub.add_argument("--with", dest="user", metavar="USER", help="only this user")
    command("shares", cmd_shares,
            "list the folders you share and those shared with you, with roles")
    sub = command("leave", cmd_leave,
                  "leave a folder shared with you: it goes from all your devices")
    sub.add_argument("path", help="the shared folder's workspace path")
