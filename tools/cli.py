"""The ``loft`` command line.

Every failure the user can cause or meet (a wrong password, a server that is down,
a missing path) is a ``LoftError``: it is printed here, as one line on stderr, and
the command exits 1. A traceback is a bug.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from tqdm import tqdm

from backend.client import Client
from backend.errors import LocalError, LoftError, first_of
from tools import pins
from tools.home import Device, alive, home_dir, load_device, save_device
from tools.workspace import RemoteWorkspace

log = logging.getLogger("loft")

DEFAULT_LISTEN = "127.0.0.1:8470"
UNMOUNT_SECONDS = 60.0
"""How long ``loft unmount`` waits for the mount process to finish and exit."""


def _password(prompt: str = "Password: ", confirm: bool = False) -> str:
    value = os.environ.get("LOFT_PASSWORD")
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise LocalError("no password: set LOFT_PASSWORD or run on a terminal")
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat password: ") != value:
        raise LocalError("the passwords do not match")
    return value


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


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# --- server-side commands ----------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> None:
    from backend.server.main import serve

    trio.run(serve, Path(args.data), args.listen, args.metadata, args.blocks)


def cmd_user_add(args: argparse.Namespace) -> None:
    from backend.protocol import validate_name
    from backend.server.auth import hash_password
    from backend.server.main import open_metadata

    validate_name(args.name)
    password = _password(confirm=True)
    if len(password) < 8:
        raise LocalError("a password needs at least 8 characters")
    with open_metadata(args.metadata, Path(args.data)) as metadata:
        metadata.add_user_sync(args.name, hash_password(password))
    print(f"user {args.name} added")


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
        print(problem)
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
            print(f"problem: {problem}")
        verdict = "clean" if report.clean else f"{len(report.problems)} problem(s)"
        print(
            f"checked {report.namespaces} namespace(s), {report.versions} journal record(s),"
            f" {report.entries} entries, {report.chunks} chunk(s): {verdict}"
        )
        return report.clean

    if not trio.run(run):
        sys.exit(1)


# --- device commands ---------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> None:
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    device_name = args.device or socket.gethostname()
    password = _password()

    async def run() -> dict[str, Any]:
        async with Client(url, attempts=2) as client:
            answer: dict[str, Any] = await client.login(args.user, password, device_name)
            return answer

    answer = trio.run(run)
    home = home_dir(args.home)
    save_device(
        home,
        Device(
            url, answer["user"], device_name, answer["token"], answer["root_ns"], answer["expires"]
        ),
    )
    print(f"logged in to {url} as {answer['user']} (device {device_name}, home {home})")


def _with_workspace(
    args: argparse.Namespace, body: Callable[[RemoteWorkspace], Awaitable[None]]
) -> None:
    device = load_device(home_dir(args.home))

    async def run() -> None:
        async with Client(device.server, device.token) as client:
            await body(RemoteWorkspace(client, device.root_ns))

    trio.run(run)


def cmd_ls(args: argparse.Namespace) -> None:
    async def body(ws: RemoteWorkspace) -> None:
        entry, children = await ws.listing(args.path)
        for child in children if entry["kind"] == "dir" else [entry]:
            name = child["name"] + ("/" if child["kind"] == "dir" else "")
            if child["kind"] == "symlink":
                name += f" -> {child['target']}"
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
            f"{args.remote}: {_human(size)} committed at revision {result['seq']}"
            f" ({_human(result['sent'])} uploaded)"
        )

    _with_workspace(args, body)


def cmd_get(args: argparse.Namespace) -> None:
    async def body(ws: RemoteWorkspace) -> None:
        with _progress_bar(f"get {args.remote}") as bar:
            entry = await ws.get(args.remote, Path(args.local), _totalled(bar))
        print(f"{args.local}: {_human(entry['size'])} from revision {entry['rev']}")

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


def _parse_size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number, unit = text.rstrip("iBb").rstrip(), ""
    if number and number[-1].lower() in units:
        number, unit = number[:-1], number[-1].lower()
    try:
        return int(float(number) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 2G, 500M)") from None


def cmd_mount(args: argparse.Namespace) -> None:
    home = home_dir(args.home)
    device = load_device(home)
    mountpoint = Path(args.mountpoint).absolute()
    if not mountpoint.is_dir():
        raise LocalError(f"{mountpoint}: no such directory")
    if os.path.ismount(mountpoint):
        raise LocalError(f"{mountpoint} is already a mount point")
    if args.foreground:
        from fs.mount import serve_mount

        trio.run(
            functools.partial(
                serve_mount,
                home,
                mountpoint,
                device.server,
                device.token,
                device.root_ns,
                device.device,
                args.cache_size,
                fetch_timeout=args.fetch_timeout,
            )
        )
        return
    log_path = home / "mount.log"
    argv = [
        sys.executable,
        "-m",
        "tools.cli",
        "--home",
        str(home),
        "mount",
        str(mountpoint),
        "--foreground",
        "--cache-size",
        str(args.cache_size),
        "--fetch-timeout",
        str(args.fetch_timeout),
    ]
    if args.verbose:
        argv.insert(3, "--verbose")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise LocalError(f"mount failed: {tail[0]}")
        time.sleep(0.05)
    (home / "mount.pid").write_text(str(proc.pid))
    print(f"mounted {device.server} at {mountpoint} (log: {log_path})")


def cmd_unmount(args: argparse.Namespace) -> None:
    home = home_dir(args.home)
    mountpoint = Path(args.mountpoint).absolute()
    if not os.path.ismount(mountpoint):
        raise LocalError(f"{mountpoint} is not mounted")
    result = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LocalError(
            result.stderr.strip().splitlines()[-1] if result.stderr else "unmount failed"
        )
    pid_file = home / "mount.pid"
    if pid_file.exists():
        # The mount pushes what is pending (a bounded time) and closes its cache on
        # the way out: unmounted means that process is gone.
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + UNMOUNT_SECONDS
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)
        if alive(pid):
            raise LocalError(
                f"the mount process {pid} is still running {UNMOUNT_SECONDS:.0f}s after"
                f" the unmount; see {home / 'mount.log'}"
            )
        pid_file.unlink(missing_ok=True)
    print(f"unmounted {mountpoint}")


def cmd_status(args: argparse.Namespace) -> None:
    home = home_dir(args.home)
    device = load_device(home)
    print(f"home:    {home}")
    print(f"server:  {device.server}")
    print(f"user:    {device.user} (device {device.device})")
    try:
        mount = json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        mount = None
    if mount is not None and alive(int(mount["pid"])):
        state = "online" if mount["online"] else f"offline ({mount['error']})"
        print(f"mount:   running (pid {mount['pid']}), {state}")
        print(
            f"pending: {mount['pending_ops']} change(s) to upload,"
            f" {_human(mount['pending_bytes'])} of new content"
        )
        print(
            f"cache:   {_human(mount['bytes'])} of {_human(mount['cap'])}"
            f" in {mount['chunks']} chunk(s)"
        )
    if (home / "cache" / "data.mdb").exists():
        with pins.device_cache(home) as cache:
            for pin in pins.report(cache):
                print(f"pinned:  {_pin_summary(pin)}")
            notes = pins.conflicts(cache)
        for note in notes[:5]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note["time"]))
            print(f"conflict: {when} {note['path']}: {note['detail']} ({note['kind']})")
        if len(notes) > 5:
            print(f"conflict: and {len(notes) - 5} more (see the mount's log)")

    async def run() -> None:
        async with Client(device.server, device.token, attempts=1, timeout=5) as client:
            try:
                who = await client.whoami()
            except LoftError as err:
                print(f"state:   offline ({err})")
                return
            heads = ", ".join(f"ns {n['ns']} at {n['head']}" for n in who["namespaces"])
            print(f"state:   connected ({heads})")

    trio.run(run)


def _pin_summary(pin: dict[str, Any]) -> str:
    held = "all on this device" if not pin["missing"] else f"{_human(pin['missing'])} to fetch"
    if pin["kind"] == "dir":
        return f"{pin['path']} (folder: {pin['files']} file(s), {_human(pin['bytes'])}, {held})"
    return f"{pin['path']} ({pin['kind']}: {_human(pin['bytes'])}, {held})"


def cmd_pin(args: argparse.Namespace) -> None:
    """Pin, then wait while the running mount fetches (see ``tools.pins`` for how)."""
    home = home_dir(args.home)
    load_device(home)
    with pins.device_cache(home) as cache:
        path, entry_id = pins.resolve(cache, args.path)
        cache.pin(entry_id)
        cache.flush()  # fsync'd: the pin survives a power cut from here on
        if pins.running_mount(home) is None:
            print(f"pinned {path}: its content is fetched when the device is mounted")
            return
        left = pins.usage(cache, entry_id)["missing"]
        progress = time.monotonic()
        while left and not args.no_wait:
            if pins.running_mount(home) is None:
                break
            if time.monotonic() - progress > args.wait:
                break
            time.sleep(0.2)
            now = pins.usage(cache, entry_id)["missing"]
            if now < left:
                left, progress = now, time.monotonic()
        pin = pins.describe(cache, entry_id)
    summary = _pin_summary(pin) if pin is not None else path
    if left:
        print(f"pinned {summary}: the mount goes on fetching in the background")
    else:
        print(f"pinned {summary}")


def cmd_unpin(args: argparse.Namespace) -> None:
    home = home_dir(args.home)
    load_device(home)
    with pins.device_cache(home) as cache:
        path, entry_id = pins.resolve(cache, args.path)
        if not cache.unpin(entry_id):
            above = pins.pinned_above(cache, entry_id)
            if above is not None:
                raise LocalError(f"{path} is not pinned itself: its folder {above} is")
            raise LocalError(f"{path} is not pinned")
        cache.flush()
    print(f"unpinned {path}: its content may be evicted from the cache from now on")


# --- argument parsing --------------------------------------------------------------


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

    sub = command("serve", cmd_serve, "run the server")
    _server_store_args(sub)
    sub.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})"
    )

    user = command("user", lambda a: None, "manage accounts on the server's store")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    sub = user_commands.add_parser(
        "add", help="add an account (password from LOFT_PASSWORD or a prompt)"
    )
    sub.set_defaults(fn=cmd_user_add)
    sub.add_argument("name")
    _server_store_args(sub)

    sub = command(
        "fsck",
        cmd_fsck,
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
    sub.add_argument("url", help="the server, e.g. http://127.0.0.1:8470")
    sub.add_argument("--user", required=True)
    sub.add_argument("--device", help="this device's name (default: the host name)")

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

    sub = command("mount", cmd_mount, "mount the workspace as a directory")
    sub.add_argument("mountpoint")
    sub.add_argument("--foreground", action="store_true", help="stay attached (for systemd)")
    sub.add_argument(
        "--cache-size",
        type=_parse_size,
        default=_parse_size("2G"),
        help="chunk cache cap (default 2G)",
    )
    sub.add_argument(
        "--fetch-timeout",
        type=float,
        default=10.0,
        help="seconds before a read of unreachable content fails with EIO",
    )

    sub = command("unmount", cmd_unmount, "unmount, after pushing what can be pushed")
    sub.add_argument("mountpoint")

    command("status", cmd_status, "show this device's sync state")

    sub = command(
        "pin",
        cmd_pin,
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
    sub = command("unpin", cmd_unpin, "let a pinned file's or folder's content be evicted again")
    sub.add_argument("path", help="a path inside the mount, or a workspace path (/docs)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO
        if args.verbose or args.command in ("serve", "mount")
        else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
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
        print(f"loft: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
