"""The wire protocol shared by the Loft server and its clients.

Everything that crosses the network is defined here: chunk ids, the CBOR codec,
name and path rules, and the shapes of the records exchanged under ``/v1``.

Chunk ids
    The lowercase hex BLAKE3-256 digest of a chunk's plain (uncompressed) content,
    64 characters. A chunk is at most ``MAX_CHUNK`` bytes.

Entry ids
    32 lowercase hex characters (128 random bits) chosen by the client that creates
    the entry, so that a device can create and then refer to an entry offline, inside
    one commit, before the server has seen it. The root directory of every namespace
    has the id ``ROOT_ID``. A rename keeps the id, and with it the history.

Entry record (CBOR map; the answer of lookups, trees, the changes feed)

    ====== ============ ====================================================
    key    type         meaning
    ====== ============ ====================================================
    id     str          entry id
    parent str          parent entry id ("" for the root)
    name   str          name in the parent ("" for the root)
    kind   str          "file", "dir" or "symlink"
    rev    int          journal sequence of the entry's latest change
    size   int          content length in bytes (0 for dirs)
    mode   int          permission bits (the low 12 bits of st_mode)
    mtime  int          modification time, nanoseconds since the epoch
    blocks list         files: ``[[chunk_id, length], ...]`` in file order
    target str          symlinks: the link target
    deleted bool        only in the changes feed: the entry is gone at ``rev``
    ====== ============ ====================================================

Operations (CBOR maps in the ``ops`` list of a commit). Every operation has
``op`` (its kind) and ``op_id`` (32 hex chars, unique per namespace, chosen by the
client so that a commit repeated after a lost reply is applied once).

    ========= ==================================================================
    op        keys
    ========= ==================================================================
    create    entry, parent, name, kind ("file"|"symlink"), mode, mtime,
              size, blocks (files) or target (symlinks)
    mkdir     entry, parent, name, mode, mtime
    update    entry, base, size, mtime, blocks [, mode]
    rename    entry, base, parent, name [, replace: {entry, base}]
    delete    entry, base [, recursive: bool]
    setattr   entry, base [, mode] [, mtime]
    ========= ==================================================================

``base`` is the ``rev`` the client based its change on; the server applies the
operation only if the entry's current ``rev`` is still ``base`` (compare-and-swap).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import blake3
import cbor2

from backend.errors import BadRequest, NameTooLong
from backend.text import UNSAFE, printable

API = "/v1"
CBOR = "application/cbor"

MAX_CHUNK = 4 * 1024 * 1024
"""No chunk is larger than this (4 MiB)."""

CDC_MIN = 256 * 1024
CDC_AVG = 768 * 1024
"""FastCDC's ``avg_size``; with cut-point skipping past ``CDC_MIN`` the mean chunk is ~1 MiB."""
CDC_MAX = MAX_CHUNK

MAX_PACK_BYTES = 8 * 1024 * 1024
"""Content bytes in one chunk pack (``POST /v1/chunks``)."""
MAX_PACK_CHUNKS = 1024
"""Chunks in one pack."""

MAX_NAME_BYTES = 255
MAX_OPS_PER_COMMIT = 10_000
MAX_IDS_PER_QUERY = 10_000
MAX_WAIT_SECONDS = 60.0

MAX_BLOCKS = 1 << 16
"""Blocks in one file's block list: a 16 GiB file at the least (every chunk but the
last is at least ``CDC_MIN``), about 64 GiB at the mean chunk size."""
MAX_COMMIT_BLOCKS = 2 * MAX_BLOCKS
"""Blocks named by all the operations of one commit together."""
MAX_INLINE_BYTES = 1024 * 1024
"""Content a commit may carry with it (``chunks``, as in a pack): a small file's save
goes up in one request."""
FEED_INLINE_CHANGES = 32
FEED_INLINE_BYTES = 64 * 1024
"""A feed page of at most this many changes carries the content of the small files in
it that other devices wrote, up to this many bytes (``chunks``)."""
MAX_COMMIT_BYTES = 16 * 1024 * 1024
"""A commit's CBOR body: ``MAX_OPS_PER_COMMIT`` operations and ``MAX_COMMIT_BLOCKS``
blocks fit well within it."""
MAX_BODY_BYTES = 1024 * 1024
"""Any other CBOR request body (chunk packs excepted: ``MAX_PACK_BYTES``)."""
MAX_DEPTH = 1000
"""Folders below the root: nothing is created or moved into a folder this deep."""
MAX_PAGE = 5000
"""Records in one answer of ``tree`` or ``versions`` (the client asks for the rest)."""

ROOT_ID = "0" * 32
KINDS = ("file", "dir", "symlink")
OP_KINDS = ("create", "mkdir", "update", "rename", "delete", "setattr")

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")


# --- ids ---------------------------------------------------------------------------


def chunk_id(data: bytes | bytearray | memoryview) -> str:
    """The id of a chunk: hex BLAKE3-256 of its plain content."""
    return blake3.blake3(data).hexdigest()


def is_chunk_id(value: object) -> bool:
    return isinstance(value, str) and _HEX64.match(value) is not None


def is_entry_id(value: object) -> bool:
    return isinstance(value, str) and _HEX32.match(value) is not None


def new_id() -> str:
    """A fresh random entry or operation id."""
    return os.urandom(16).hex()


# --- CBOR --------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    return cbor2.dumps(value)


def decode(body: bytes) -> Any:
    """Decode a CBOR body; anything malformed is a ``BadRequest``."""
    try:
        return cbor2.loads(body)
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise BadRequest(f"malformed CBOR body: {exc}") from None


def decode_map(body: bytes) -> dict[str, Any]:
    value = decode(body)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise BadRequest("request body must be a CBOR map with string keys")
    return value


# --- names and paths ---------------------------------------------------------------


def validate_name(name: object) -> str:
    """A single path component: non-empty, no ``/`` or NUL, not ``.``/``..``, ≤255 bytes.

    Anything else is a ``BadRequest``; a name over 255 bytes is its subclass
    ``NameTooLong`` (the mount answers ``ENAMETOOLONG`` for it).
    """
    if not isinstance(name, str) or not name:
        raise BadRequest("a name must be a non-empty string")
    if "/" in name or "\0" in name:
        raise BadRequest(f"invalid name {name!r}: names may not contain '/' or NUL")
    if name in (".", ".."):
        raise BadRequest(f"invalid name {name!r}")
    if name == VERSIONS:
        raise BadRequest(f"the name {VERSIONS!r} is reserved: it shows past versions")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"invalid name {name!r}: not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise NameTooLong(f"name too long ({len(encoded)} bytes, at most {MAX_NAME_BYTES})")
    return name


MAX_DEVICE_NAME = 64


def validate_device_name(name: object) -> str:
    """A device's name (``loft login --device``): 1-64 characters, none of them a
    control character or a bidirectional override or isolate (``backend.text.UNSAFE``).

    Unlike an entry name, it is shown in every commit line of the server's log and by
    ``loft versions``, where such a character could forge a line or disguise a name.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_DEVICE_NAME:
        raise BadRequest(f"a device name must be 1-{MAX_DEVICE_NAME} characters")
    if UNSAFE.search(name):
        raise BadRequest(f"invalid device name \"{printable(name)}\": control characters and"
                         " bidirectional overrides are not allowed")
    return name


# --- the past: instants and snapshot names ----------------------------------------------

VERSIONS = ".versions"
"""The read-only folder of past versions, in every folder of a mount (never stored)."""
LATEST = "latest"
_INSTANT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2})Z?)?$")
_DAY_FORMAT = "%Y-%m-%d"
_INSTANT_FORMAT = "%Y-%m-%dT%H%M%SZ"


def format_instant(when: int) -> str:
    """``2026-12-02T073000Z``: a UTC second without colons, sorting as it reads."""
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime(_INSTANT_FORMAT)


def format_day(when: int) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime(_DAY_FORMAT)


def parse_instant(text: str) -> int | None:
    """The unix second a name such as ``2026-12-02T073000Z``, ``2026-12-02T07:30:00Z``
    or ``2026-12-02`` (its end: 23:59:59) stands for; None if it is no instant."""
    match = _INSTANT.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = match.groups()
    try:
        at = datetime.datetime(int(year), int(month), int(day), tzinfo=datetime.UTC)
        if hour is None:
            at += datetime.timedelta(days=1, seconds=-1)
        else:
            at = at.replace(hour=int(hour), minute=int(minute), second=int(second))
    except ValueError:
        return None
    return int(at.timestamp())


def is_day(text: str) -> bool:
    return len(text) == 10 and parse_instant(text) is not None


def validate_snapshot_name(name: object) -> str:
    """A snapshot's name: a valid name that no instant, day or ``latest`` could be."""
    checked = validate_name(name)
    if checked == LATEST or parse_instant(checked) is not None:
        raise BadRequest(f"{checked!r} reads as a time: pick another snapshot name")
    return checked


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine: where plain http is safe."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_path(path: str) -> list[str]:
    """Split a workspace path into validated components.

    ``/a/./b/`` gives ``["a", "b"]``; ``a/../b`` gives ``["b"]``; a ``..`` that would
    climb above the workspace root is refused, as are NUL bytes.
    """
    if "\0" in path:
        raise BadRequest("invalid path: contains NUL")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise BadRequest(f"path {path!r} leaves the workspace")
            parts.pop()
            continue
        parts.append(validate_name(part))
    return parts


def join_path(parts: Iterable[str]) -> str:
    return "/" + "/".join(parts)


# --- field validation (used at the server's edge) ----------------------------------


def field(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``record[key]`` checked against ``kind``; a missing or mistyped field is a 400."""
    if key not in record:
        raise BadRequest(f"missing field {key!r}")
    value = record[key]
    if isinstance(value, bool) and kind is int:
        raise BadRequest(f"field {key!r} must be an integer")
    if not isinstance(value, kind):
        raise BadRequest(f"field {key!r} has the wrong type")
    return value


def entry_id_field(record: Mapping[str, Any], key: str) -> str:
    value = field(record, key, str)
    if not is_entry_id(value):
        raise BadRequest(f"field {key!r} is not an entry id")
    return str(value)


def nonneg_int(record: Mapping[str, Any], key: str, default: int | None = None) -> int:
    if default is not None and key not in record:
        return default
    value = field(record, key, int)
    if value < 0 or value >= 1 << 63:
        raise BadRequest(f"field {key!r} is out of range")
    return int(value)


def block_list(record: Mapping[str, Any]) -> list[tuple[str, int]]:
    """A validated ``blocks`` field: ``[[chunk_id, length], ...]``."""
    raw = field(record, "blocks", list)
    if len(raw) > MAX_BLOCKS:
        raise BadRequest(f"a file has at most {MAX_BLOCKS} blocks")
    blocks: list[tuple[str, int]] = []
    for item in raw:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not is_chunk_id(item[0])
            or not isinstance(item[1], int)
            or isinstance(item[1], bool)
            or not 0 < item[1] <= MAX_CHUNK
        ):
            raise BadRequest("blocks must be [[chunk_id, length], ...] with 0 < length <= 4 MiB")
        blocks.append((item[0], item[1]))
    return blocks


def commit_batches(ops: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``ops`` cut into consecutive commits within ``MAX_OPS_PER_COMMIT`` operations
    and ``MAX_COMMIT_BLOCKS`` blocks each (one operation always goes, whatever its size)."""
    batches: list[list[dict[str, Any]]] = []
    blocks = 0
    for op in ops:
        size = len(op.get("blocks", ()))
        if not batches or len(batches[-1]) >= MAX_OPS_PER_COMMIT or (
            batches[-1] and blocks + size > MAX_COMMIT_BLOCKS
        ):
            batches.append([])
            blocks = 0
        batches[-1].append(op)
        blocks += size
    return batches


def chunk_pack(
    record: Mapping[str, Any], limit: int = MAX_PACK_BYTES
) -> list[tuple[str, bytes]]:
    """``record["chunks"]``: ``[[chunk_id, content], ...]`` within the pack limits (at
    most ``limit`` bytes of content)."""
    raw = field(record, "chunks", list)
    if not 0 < len(raw) <= MAX_PACK_CHUNKS:
        raise BadRequest(f"a pack holds 1 to {MAX_PACK_CHUNKS} chunks")
    pack: list[tuple[str, bytes]] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not is_chunk_id(item[0])
            or not isinstance(item[1], bytes)
            or not 0 < len(item[1]) <= MAX_CHUNK
        ):
            raise BadRequest("chunks must be [[chunk_id, content], ...] with 0 < size <= 4 MiB")
        pack.append((item[0], item[1]))
    if sum(len(data) for _, data in pack) > limit:
        raise BadRequest(f"a pack holds at most {limit} bytes of content")
    return pack


def chunk_ids(record: Mapping[str, Any], key: str = "ids") -> list[str]:
    raw = field(record, key, list)
    if len(raw) > MAX_IDS_PER_QUERY:
        raise BadRequest(f"at most {MAX_IDS_PER_QUERY} ids per request")
    if not all(is_chunk_id(x) for x in raw):
        raise BadRequest("ids must be 64-character lowercase hex chunk ids")
    return list(raw)
