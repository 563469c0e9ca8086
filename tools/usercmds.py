"""The ``loft user`` commands, run on the server's own stores: ``add``, ``quota``,
``passwd`` (revokes every token of the account) and ``remove``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from backend.errors import LocalError
from tools.mountcmds import human, parse_size

StoreArgs = Callable[[argparse.ArgumentParser], None]


def password(prompt: str = "Password: ", confirm: bool = False) -> str:
    value = os.environ.get("LOFT_PASSWORD")
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise LocalError("no password: set LOFT_PASSWORD or run on a terminal")
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat password: ") != value:
        raise LocalError("the passwords do not match")
    return value


def quota_size(text: str) -> int | None:
    """A quota as given on the command line: a size (``500M``, ``10G``) or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        size = parse_size(text)
    except argparse.ArgumentTypeError as exc:
        raise LocalError(f"{exc}, or none for no quota") from None
    if size < 0:
        raise LocalError(f"a quota cannot be negative: {text!r}")
    return size


def cmd_user_add(args: argparse.Namespace) -> None:
    from backend.protocol import validate_name
    from backend.server.auth import hash_password
    from backend.server.main import open_metadata

    validate_name(args.name)
    limit = quota_size(args.quota) if args.quota is not None else None
    secret = new_password()
    with open_metadata(args.metadata, Path(args.data)) as metadata:
        metadata.add_user_sync(args.name, hash_password(secret), limit)
    print(f"user {args.name} added" + (f", quota {human(limit)}" if limit is not None else ""))


def new_password() -> str:
    secret = password(confirm=True)
    if len(secret) < 8:
        raise LocalError("a password needs at least 8 characters")
    return secret


def cmd_user_passwd(args: argparse.Namespace) -> None:
    from backend.server import accounts
    from backend.server.auth import hash_password
    from backend.server.database import run
    from backend.server.main import open_metadata

    pw_hash = hash_password(new_password())
    with open_metadata(args.metadata, Path(args.data)) as metadata:
        revoked = run(metadata.db, lambda tx: accounts.set_password(tx, args.name, pw_hash))
    print(f"user {args.name}: password changed, {revoked} token(s) revoked;"
          " every device must log in again")


def cmd_user_remove(args: argparse.Namespace) -> None:
    from backend.server import accounts
    from backend.server.database import run
    from backend.server.main import open_metadata

    with open_metadata(args.metadata, Path(args.data)) as metadata:
        removed = run(metadata.db, lambda tx: accounts.remove_user(tx, args.name))
    print(f"user {args.name} removed with {removed} namespace(s) and their history;"
          " `loft gc` reclaims their chunks")


def cmd_user_quota(args: argparse.Namespace) -> None:
    from backend.server import quota
    from backend.server.database import run
    from backend.server.main import open_metadata

    limit = quota_size(args.size)
    with open_metadata(args.metadata, Path(args.data)) as metadata:
        used = run(metadata.db, lambda tx: quota.set_limit(tx, args.name, limit))
    if limit is None:
        print(f"user {args.name}: no quota ({human(used)} used)")
    else:
        print(f"user {args.name}: quota {human(limit)} ({human(used)} used)")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_args: StoreArgs
) -> None:
    """``loft user add|quota|passwd|remove`` under ``commands``; ``store_args`` adds
    --data and co."""
    user = commands.add_parser(
        "user", help="manage accounts on the server's store",
        description="manage accounts on the server's store",
    )
    user.set_defaults(fn=lambda a: None)
    actions = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    def action(
        name: str, fn: Callable[[argparse.Namespace], None], text: str, more: str = ""
    ) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text + more)
        sub.set_defaults(fn=fn)
        sub.add_argument("name")
        store_args(sub)
        return sub

    sub = action("add", cmd_user_add, "add an account (password from LOFT_PASSWORD or a prompt)")
    sub.add_argument("--quota", help="the most the account may store, e.g. 500M, 10G")
    sub = action("quota", cmd_user_quota, "set an account's quota (a size such as 10G), or none")
    sub.add_argument("size", help="e.g. 500M, 10G, or none")
    action("passwd", cmd_user_passwd,
           "change an account's password (from LOFT_PASSWORD or a prompt)",
           "; every token of the account is revoked, so each device must log in again")
    action("remove", cmd_user_remove, "remove an account",
           ": its tokens (at once), its memberships, and the namespaces it owns with all"
           " their files and history, which cannot be undone; `loft gc` then reclaims the"
           " chunks nothing else holds. Refused while a namespace it owns is shared with"
           " another user.")
