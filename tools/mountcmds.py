"""The ``loft`` commands of a device's mount: ``mount``, ``unmount``, ``status``,
``pin`` and ``unpin`` (the rest of the command line is ``tools.cli``)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from backend.errors import LocalError, LoftError
from backend.private import open_private, private_dir, restrict_umask, write_private
from backend.sizes import human as human  # re-exported: tools.cli uses it
from backend.text import printable
from tools import pins
from tools.home import alive, home_dir, load_device

log = logging.getLogger("loft")

UNMOUNT_SECONDS = 60.0
"""How long ``loft unmount`` waits for the mount process to finish and exit."""


# --- server-side commands ----------------------------------------------------------


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number, unit = text.rstrip("iBb").rstrip(), ""
    if number and number[-1].lower() in units:
        number, unit = number[:-1], number[-1].lower()
    try:
        return int(float(number) * units[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 2G, 500M)") from None


def cmd_mount(args: argparse.Namespace) -> None:
    restrict_umask()  # the cache, staging files, log and status: owner-only
    home = home_dir(args.home)
    device = load_device(home)
    private_dir(home, "home")
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
                ca=device.ca,
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
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_APPEND), "ab") as log_file:
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
    write_private(home / "mount.pid", str(proc.pid))
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
    print(f"home:    {printable(home)}")
    print(f"server:  {printable(device.server)}")
    print(f"user:    {printable(device.user)} (device {printable(device.device)})")
    try:
        mount = json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        mount = None
    if mount is not None and alive(int(mount["pid"])):
        state = "online" if mount["online"] else f"offline ({printable(mount['error'])})"
        print(f"mount:   running (pid {mount['pid']}), {state}")
        parked = int(mount.get("parked", 0))
        sealing = f" ({parked} file(s) closed, being sealed)" if parked else ""
        print(
            f"pending: {mount['pending_ops'] + parked} change(s) to upload{sealing},"
            f" {human(mount['pending_bytes'])} of new content"
        )
        if mount.get("over_quota"):
            print(f"sync:    {printable(mount['over_quota'])}; changes wait in the journal")
        print(
            f"cache:   {human(mount['bytes'])} of {human(mount['cap'])}"
            f" in {mount['chunks']} chunk(s)"
        )
    if (home / "cache" / "data.mdb").exists():
        with pins.device_cache(home) as cache:
            for pin in pins.report(cache):
                print(f"pinned:  {printable(_pin_summary(pin))}")
            notes = pins.conflicts(cache)
        for note in notes[:5]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note["time"]))
            print(printable(f"conflict: {when} {note['path']}: {note['detail']} ({note['kind']})"))
        if len(notes) > 5:
            print(f"conflict: and {len(notes) - 5} more (see the mount's log)")

    async def run() -> None:
        async with device.client(attempts=1, timeout=5) as client:
            try:
                who = await client.whoami()
            except LoftError as err:
                print(f"state:   offline ({printable(err)})")
                print("storage: unknown (the server is not reachable)")
                return
            heads = ", ".join(f"ns {n['ns']} at {n['head']}" for n in who["namespaces"])
            print(f"state:   connected ({heads})")
            print(f"storage: {_storage(who['usage'], who['quota'])}")

    trio.run(run)


def _storage(usage: int, quota: int | None) -> str:
    if quota is None:
        return f"{human(usage)}, no quota"
    over = ", over quota" if usage > quota else ""
    return f"{human(usage)} of {human(quota)}{over}"


def _pin_summary(pin: dict[str, Any]) -> str:
    held = "all on this device" if not pin["missing"] else f"{human(pin['missing'])} to fetch"
    if pin["kind"] == "dir":
        return f"{pin['path']} (folder: {pin['files']} file(s), {human(pin['bytes'])}, {held})"
    return f"{pin['path']} ({pin['kind']}: {human(pin['bytes'])}, {held})"


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
        print(f"pinned {printable(summary)}: the mount goes on fetching in the background")
    else:
        print(f"pinned {printable(summary)}")


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
