"""The ``loft`` command line.

Every failure the user can cause or meet (a wrong password, a server that is down,
a missing path) is a ``LoftError``: it is printed here, as one line on stderr, and
the command exits 1. A traceback is a bug. Names and messages from elsewhere go through
``backend.text.printable`` on their way to the terminal and into every log line (the
``PrintableFormatter`` set up in ``main``): no control character or bidi override
reaches either raw. The commands of a device's mount are in
``tools.mountcmds``, those of accounts (``loft user``) in ``tools.usercmds``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from tqdm import tqdm

from backend.client import Client
from backend.errors import LocalError, LoftError, first_of
from backend.private import private_dir, restrict_umask
from backend.protocol import validate_device_name
from backend.server.limits import Limits
from backend.text import PrintableFormatter, printable
from tools import (
    devicecmds,
    fsckcmds,
    gccmds,
    historycmds,
    linkcmds,
    mountcmds,
    sharecmds,
    usercmds,
)
from tools.home import Device, home_dir, load_device, save_device, server_url
from tools.workspace import RemoteWorkspace

log = logging.getLogger("loft")

DEFAULT_LISTEN = "127.0.0.1:8470"


def _progress_bar(description: str) -> tqdm:
    return tqdm(
        total=0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=description,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from backend.server.main import serve

    restrict_umask()  # chunks, metadata.db and its -wal/-shm: owner-only
    settings = gccmds.serve_settings(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise LocalError("give --tls-cert and --tls-key together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    if min(args.max_requests, args.max_requests_per_address, args.body_timeout) <= 0:
        raise LocalError("--max-requests, --max-requests-per-address and --body-timeout"
                         " must be positive")
    limits = Limits(args.max_requests_per_address, args.max_requests, args.body_timeout)
    trio.run(functools.partial(serve, Path(args.data), args.listen, args.metadata, args.blocks,
                               *settings, tls=tls, limits=limits))


# --- device commands ---------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> None:
    url = server_url(args.url, args.insecure_http)
    ca = str(Path(args.ca).absolute()) if args.ca else None
    if ca is not None and not os.access(ca, os.R_OK):
        raise LocalError(f"--ca {args.ca}: cannot read it")
    device_name = validate_device_name(args.device or socket.gethostname())
    home = home_dir(args.home)
    private_dir(home, "home")  # refused before the password goes anywhere
    password = usercmds.password()

    async def run() -> dict[str, Any]:
        async with Client(url, attempts=2, ca=ca) as client:
            answer: dict[str, Any] = await client.login(args.user, password, device_name)
            return answer

    answer = trio.run(run)
    save_device(
        home,
        Device(url, answer["user"], device_name, answer["token"], answer["root_ns"],
               answer["expires"], ca),
    )
    print(f"logged in to {url} as {answer['user']} (device {device_name}, home {home})")


def _with_workspace(
    args: argparse.Namespace, body: Callable[[RemoteWorkspace], Awaitable[None]]
) -> None:
    device = load_device(home_dir(args.home))

    async def run() -> None:
        async with device.client() as client:
            await body(RemoteWorkspace(client, device.root_ns))

    trio.run(run)


def cmd_ls(args: argparse.Namespace) -> None:
    async def body(ws: RemoteWorkspace) -> None:
        entry, children = await ws.listing(args.path)
        for child in children if entry["kind"] == "dir" else [entry]:
            name = printable(child["name"]) + ("/" if child["kind"] == "dir" else "")
            if child["kind"] == "symlink":
                name += f" -> {printable(child['target'])}"
            if args.long:
                kind = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(
                    child["kind"], stat.S_IFREG
                )
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(child["mtime"] / 1e9))
                print(f"{stat.filemode(kind | child['mode'])} {child['size']:>12} {when} {name}")
            else:
                print(name)

    _with_workspace(args, body)


def cmd_put(args: argparse.Namespace) -> None:
    local = Path(args.local)

    async def body(ws: RemoteWorkspace) -> None:
        with _progress_bar(f"put {local.name}") as bar:

            def total(n: int) -> None:
                bar.total = n
                bar.refresh()

            result = await ws.put(local, args.remote, bar.update, on_total=total)
        size = (await trio.Path(local).stat()).st_size
        print(
            f"{args.remote}: {mountcmds.human(size)} committed at revision {result['seq']}"
            f" ({mountcmds.human(result['sent'])} uploaded)"
        )

    _with_workspace(args, body)


def cmd_get(args: argparse.Namespace) -> None:
    async def body(ws: RemoteWorkspace) -> None:
        with _progress_bar(f"get {args.remote}") as bar:
            entry = await ws.get(args.remote, Path(args.local), _totalled(bar))
        print(f"{args.local}: {mountcmds.human(entry['size'])} from revision {entry['rev']}")

    _with_workspace(args, body)


def _totalled(bar: tqdm) -> Callable[[int], None]:
    def update(n: int) -> None:
        bar.total = max(bar.total or 0, bar.n + n)
        bar.update(n)

    return update


def cmd_mkdir(args: argparse.Namespace) -> None:
    _with_workspace(args, lambda ws: ws.mkdir(args.path, args.parents))


def cmd_mv(args: argparse.Namespace) -> None:
    _with_workspace(args, lambda ws: ws.move(args.src, args.dst))


def cmd_rm(args: argparse.Namespace) -> None:
    _with_workspace(args, lambda ws: ws.remove(args.path, args.recursive))


def _server_store_args(sub: argparse.ArgumentParser, required: bool = True) -> None:
    sub.add_argument("--data", required=required, help="the server's data directory")
    sub.add_argument("--metadata", help="sqlite:///PATH or postgresql://... (default: DATA)")
    sub.add_argument("--blocks", help="file:///DIR or s3://BUCKET?endpoint=URL (default: DATA)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loft",
        description="Loft: your files on every device, mounted as a real directory.",
    )
    parser.add_argument(
        "--home", help="this device's state directory (env LOFT_HOME, default ~/.loft)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, fn: Callable[[argparse.Namespace], None], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(fn=fn)
        return sub

    sub = command("serve", cmd_serve, "run the server (the API, WebDAV at /dav/)")
    _server_store_args(sub)
    sub.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
    )
    gccmds.serve_options(sub)
    sub.add_argument("--tls-cert", metavar="FILE",
                     help="serve https: the certificate chain (PEM), with --tls-key")
    sub.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    sub.add_argument("--max-requests", type=int, default=Limits.total, metavar="N",
                     help=f"requests in flight in all (default {Limits.total})")
    sub.add_argument("--max-requests-per-address", type=int, default=Limits.per_address,
                     metavar="N", help="requests in flight from one client address (default"
                     f" {Limits.per_address}; behind a reverse proxy: as --max-requests)")
    sub.add_argument("--body-timeout", type=float, default=Limits.body_seconds,
                     metavar="SECONDS", help="time a request body has before it must"
                     f" average 8 KiB/s (default {Limits.body_seconds:g})")

    usercmds.add_commands(commands, _server_store_args)
    gccmds.register(command, _server_store_args)
    historycmds.add_commands(commands)
    devicecmds.add_commands(command)
    sharecmds.add_commands(command)
    linkcmds.add_commands(command)

    sub = command(
        "fsck",
        fsckcmds.cmd_fsck,
        "check a server's stores (--data DIR), or else this device's state (--home DIR)",
    )
    _server_store_args(sub, required=False)
    sub.add_argument(
        "--home",
        default=argparse.SUPPRESS,  # else it would hide a --home given before "fsck"
        help="the device to check (as before the command; env LOFT_HOME, default ~/.loft)",
    )

    sub = command(
        "login", cmd_login, "log this device in (password from LOFT_PASSWORD or a prompt)"
    )
    sub.add_argument(
        "url", help="the server, e.g. https://files.example.org (http:// only to loopback)"
    )
    sub.add_argument("--user", required=True)
    sub.add_argument("--device", help="this device's name (default: the host name)")
    sub.add_argument("--ca", help="a PEM file of the CA that signed the server's certificate")
    sub.add_argument("--insecure-http", action="store_true",
                     help="allow plain http:// to a host that is not loopback")

    sub = command("ls", cmd_ls, "list a remote directory")
    sub.add_argument("path", nargs="?", default="/")
    sub.add_argument("-l", "--long", action="store_true", help="mode, size and time")

    sub = command("put", cmd_put, "upload a local file (only the chunks the server lacks)")
    sub.add_argument("local")
    sub.add_argument("remote", help="remote path, or an existing remote directory")

    sub = command("get", cmd_get, "download a remote file")
    sub.add_argument("remote")
    sub.add_argument("local", help="local path, or an existing local directory")

    sub = command("mkdir", cmd_mkdir, "create a remote directory")
    sub.add_argument("path")
    sub.add_argument("-p", "--parents", action="store_true", help="create missing parents too")

    sub = command("mv", cmd_mv, "move or rename a remote file or directory")
    sub.add_argument("src")
    sub.add_argument("dst")

    sub = command("rm", cmd_rm, "remove a remote file or directory")
    sub.add_argument("path")
    sub.add_argument(
        "-r", "--recursive", action="store_true", help="remove a directory and all it holds"
    )

    sub = command("mount", mountcmds.cmd_mount, "mount the workspace as a directory")
    sub.add_argument("mountpoint")
    sub.add_argument("--foreground", action="store_true", help="stay attached (for systemd)")
    sub.add_argument(
        "--cache-size",
        type=mountcmds.parse_size,
        default=mountcmds.parse_size("2G"),
        help="chunk cache cap (default 2G)",
    )
    sub.add_argument(
        "--fetch-timeout",
        type=float,
        default=10.0,
        help="seconds before a read of unreachable content fails with EIO",
    )

    sub = command("unmount", mountcmds.cmd_unmount, "unmount, after pushing what can be pushed")
    sub.add_argument("mountpoint")

    command("status", mountcmds.cmd_status, "show this device's sync state")

    sub = command(
        "pin",
        mountcmds.cmd_pin,
        "keep a file's or folder's content on this device: fetched now, kept current,"
        " never evicted from the cache",
    )
    sub.add_argument("path", help="a path inside the mount, or a workspace path (/docs)")
    sub.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the fetch to make progress before returning (default 30)",
    )
    sub.add_argument(
        "--no-wait", action="store_true", help="return at once; the mount fetches in the background"
    )
    sub = command("unpin", mountcmds.cmd_unpin,
                  "let a pinned file's or folder's content be evicted again")
    sub.add_argument("path", help="a path inside the mount, or a workspace path (/docs)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()  # every line escaped: a name cannot forge one
    handler.setFormatter(PrintableFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(
        level=logging.INFO
        if args.verbose or args.command in ("serve", "mount")
        else logging.WARNING,
        handlers=[handler],
    )
    # boto's INFO chatter ("Found credentials in environment variables") would make a
    # failed `loft serve` print more than its one error line.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    if args.verbose:
        logging.getLogger("loft").setLevel(logging.DEBUG)
    else:  # one line per HTTP request is noise in a mount's log
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("loft: interrupted", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        err = first_of(exc, LoftError)
        if err is None:
            raise
        print(f"loft: {printable(err)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
