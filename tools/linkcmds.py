"""``loft link create|list|revoke``: links for people without an account.

They talk to the server as this device (``device.json``) through ``/v1/links``
(``backend.server.links_api``). ``create`` prints the URL, the only time it is shown:
the server keeps only a hash of its token. ``--password`` takes the link's password
from ``LOFT_LINK_PASSWORD`` or a prompt. ``revoke`` takes the URL or the id that
``list`` shows. Times are UTC, as ``loft versions`` writes them.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from backend import protocol as p
from backend.client import Client
from backend.errors import LocalError
from backend.server.retention import parse_duration
from backend.text import printable
from tools.devicecmds import with_client
from tools.gccmds import Command

DEFAULT_EXPIRES = "7d"


def link_password() -> str:
    value = os.environ.get("LOFT_LINK_PASSWORD")
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise LocalError("no link password: set LOFT_LINK_PASSWORD or run on a terminal")
    value = getpass.getpass("Link password: ")
    if getpass.getpass("Repeat link password: ") != value:
        raise LocalError("the passwords do not match")
    return value


def cmd_link_create(args: argparse.Namespace) -> None:
    expires = parse_duration(args.expires, "--expires")
    if expires <= 0:
        raise LocalError("--expires must be more than 0")
    body: dict[str, Any] = {"path": args.path, "expires": expires}
    if args.password:
        body["password"] = link_password()

    async def run(client: Client) -> None:
        made = await client.call("POST", "/links", body=body)
        print(made["url"])
        print(f"link {made['id']} to {printable(made['path'])}, expires"
              f" {p.format_instant(made['expires'])}"
              f"{', password protected' if args.password else ''}", file=sys.stderr)

    with_client(args, run)


def cmd_link_list(args: argparse.Namespace) -> None:
    async def run(client: Client) -> None:
        found = (await client.call("GET", "/links"))["links"]
        print(f"{'ID':<16}  {'EXPIRES':<18}  {'USES':>5}  PW  PATH")
        for link in found:
            path = printable(link["path"]) if link["path"] is not None else "(deleted)"
            print(f"{link['id']:<16}  {p.format_instant(link['expires']):<18}"
                  f"  {link['uses']:>5}  {'yes' if link['password'] else 'no ':<3} {path}")

    with_client(args, run)


def revoke_target(value: str) -> dict[str, str]:
    """``{"token": ...}`` for a link's URL, ``{"id": ...}`` for its id."""
    if "://" in value:
        parts = urlsplit(value).path.split("/")
        if len(parts) < 3 or parts[1] != "l" or not parts[2]:
            raise LocalError(f"{value}: not a Loft link (…/l/TOKEN)")
        return {"token": parts[2]}
    return {"id": value}


def cmd_link_revoke(args: argparse.Namespace) -> None:
    target = revoke_target(args.link)

    async def run(client: Client) -> None:
        revoked = (await client.call("POST", "/links/revoke", body=target))["id"]
        print(f"revoked link {revoked}: it stops working at once")

    with_client(args, run)


def add_commands(command: Command) -> None:
    """``loft link create|list|revoke``, made by the CLI's ``command``."""
    link = command("link", cmd_link_list, "links to a file or folder for anyone holding the"
                   " URL (no account needed): create, list, revoke")
    actions = link.add_subparsers(dest="link_command", metavar="ACTION", required=True)
    sub = actions.add_parser("create", help="make a link and print its URL",
                             description="make a link to PATH and print its URL (shown once)")
    sub.set_defaults(fn=cmd_link_create)
    sub.add_argument("path", help="a file or folder of the workspace, e.g. /docs/report.pdf")
    sub.add_argument("--expires", default=DEFAULT_EXPIRES, metavar="DURATION",
                     help=f"how long it works, e.g. 30m, 12h, 30d (default {DEFAULT_EXPIRES})")
    sub.add_argument("--password", action="store_true",
                     help="ask for a password (from LOFT_LINK_PASSWORD or a prompt)")
    sub = actions.add_parser("list", help="your live links: id, expiry, uses, path")
    sub.set_defaults(fn=cmd_link_list)
    sub = actions.add_parser("revoke", help="stop a link at once")
    sub.set_defaults(fn=cmd_link_revoke)
    sub.add_argument("link", help="its URL, or its id as `loft link list` shows it")
