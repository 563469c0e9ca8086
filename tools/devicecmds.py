"""A device's own account commands: ``loft logout``, ``loft devices [revoke NAME]``.

They talk to the server as this device (its ``device.json``). Revoking a device
deletes every token of that name on the server: each of its requests is refused at
once, and its mount reports that the server refused its token until ``loft login``.
Times are UTC, written as ``loft versions`` writes them (``2026-12-02T073000Z``).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from backend import protocol as p
from backend.client import Client
from backend.errors import LocalError, Unauthorized
from tools.gccmds import Command
from tools.home import home_dir, load_device


def with_client(args: argparse.Namespace, body: Callable[[Client], Awaitable[None]]) -> None:
    device = load_device(home_dir(args.home))

    async def run() -> None:
        async with device.client(attempts=2) as client:
            await body(client)

    trio.run(run)


def cmd_logout(args: argparse.Namespace) -> None:
    """Revoke this device's token, then forget it; a token the server already refuses
    (expired, revoked) is forgotten too. Unreachable: nothing is forgotten."""
    home = home_dir(args.home)
    device = load_device(home)
    state = "revoked on the server"

    async def run() -> None:
        nonlocal state
        async with device.client(attempts=2) as client:
            try:
                await client.logout()
            except Unauthorized:
                state = "already refused by the server"

    trio.run(run)
    try:
        (home / "device.json").unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LocalError(f"cannot remove {home / 'device.json'}: {exc.strerror}") from None
    print(f"logged out of {device.server} as {device.user} (device {device.device}):"
          f" token {state}, {home / 'device.json'} removed")


def _line(row: dict[str, Any]) -> str:
    name = row["device"] + (" *" if row["current"] else "")
    return (f"{name:<24}  {p.format_instant(row['created'])}  {p.format_instant(row['last_seen'])}"
            f"  {p.format_instant(row['expires'])}")


def cmd_devices(args: argparse.Namespace) -> None:
    async def body(client: Client) -> None:
        rows = await client.devices()
        print(f"{'DEVICE':<24}  {'CREATED':<18}  {'LAST SEEN':<18}  EXPIRES")
        for row in rows:
            print(_line(row))

    with_client(args, body)


def cmd_devices_revoke(args: argparse.Namespace) -> None:
    async def body(client: Client) -> None:
        count = await client.revoke_device(args.name)
        print(f"revoked device {args.name} ({count} token(s)); it must log in again")

    with_client(args, body)


def add_commands(command: Command) -> None:
    """``loft logout`` and ``loft devices [revoke NAME]``, made by the CLI's ``command``."""
    command("logout", cmd_logout,
            "revoke this device's token on the server and forget it (device.json)")
    devices = command("devices", cmd_devices,
                      "list this account's logged-in devices (* marks this one): created,"
                      " last seen (to the hour), token expiry")
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION")
    sub = actions.add_parser(
        "revoke", help="log a device out everywhere: its tokens stop working at once",
        description="log a device out everywhere: every token of that device name stops"
                    " working at once; it must log in again",
    )
    sub.set_defaults(fn=cmd_devices_revoke)
    sub.add_argument("name", help="the device's name, as `loft devices` lists it")
