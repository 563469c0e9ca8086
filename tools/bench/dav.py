"""WebDAV PUT and GET of one large file, beside raw loopback HTTP of the same bytes.

    python -m tools.bench.dav [--size-mib 256]

(1) The baseline, ``tools.bench.rawhttp`` (the same Hypercorn and httpx, nothing
else): one streamed PUT of the whole size, and GETs of it 4 MiB at a time over one
connection. (2) On a fresh embedded-default ``loft serve``: a WebDAV PUT of a random
file of that size (streamed from disk, cut, hashed, compressed, stored, committed),
then a GET of it. Prints MB/s (10^6 bytes per second), the ratio to the baseline, and
the server's peak resident memory (``VmHWM``) before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tools.bench.transfer import write_random
from tools.localserver import PASSWORD, ROOT, LocalServer, Stores, free_port

MiB = 1024 * 1024
PIECE = 4 * MiB


def pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(MiB):
            yield data


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_http(size: int, source: Path) -> tuple[float, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tools.bench.rawhttp", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/blob"
    try:
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    client.get(url, params={"size": 1})
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            put = timed(lambda: client.put(url, content=pieces(source)).raise_for_status())

            def get_all() -> None:
                for _ in range(size // PIECE):
                    client.get(url, params={"size": PIECE}).raise_for_status()

            return put, timed(get_all)
    finally:
        proc.terminate()
        proc.wait()


def webdav(size: int, source: Path, data_dir: Path) -> tuple[float, float, float, float]:
    server = LocalServer(Stores(data_dir))
    server.start()
    try:
        server.add_user("bench")
        assert server.proc is not None
        before = peak_rss_mib(server.proc.pid)
        url = f"{server.url}/dav/big.bin"
        with httpx.Client(timeout=120, auth=("bench", PASSWORD)) as client:
            put = timed(lambda: client.put(url, content=pieces(source)).raise_for_status())

            def get() -> None:
                with client.stream("GET", url) as answer:
                    got = sum(len(b) for b in answer.iter_bytes())
                assert got == size, got

            fetched = timed(get)
        return put, fetched, before, peak_rss_mib(server.proc.pid)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="loft-bench-dav-") as tmp:
        source = Path(tmp) / "source.bin"
        write_random(source, size)
        raw_put, raw_get = raw_http(size, source)
        put, get, before, after = webdav(size, source, Path(tmp) / "data")
    mb = size / 1e6
    print(f"{args.size_mib} MiB, MB/s (ratio to raw loopback HTTP)")
    print(f"  raw HTTP   PUT {mb / raw_put:8.1f}           GET {mb / raw_get:8.1f}")
    print(f"  WebDAV     PUT {mb / put:8.1f} ({raw_put / put:4.2f})    "
          f"GET {mb / get:8.1f} ({raw_get / get:4.2f})")
    print(f"  server peak RSS: {before:.0f} MiB at start, {after:.0f} MiB after")


if __name__ == "__main__":
    main()
