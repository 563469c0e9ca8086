"""WsgiDAV's view of a Loft workspace: resources over ``backend.server.files``.

Each request runs in a worker thread (``backend.server.dav_wsgi``); every call into
the file service crosses to the trio loop with ``trio.from_thread.run`` in ``_call``,
which is also the one place a Loft error becomes a WebDAV answer:

======================================= ===============================================
Loft error                              WebDAV answer
======================================= ===============================================
``NotFound``                            404
``Forbidden`` (a viewer's write)        403
``BadRequest``, ``NameTooLong``         400 (``..`` above the root, NUL, > 255 bytes)
``Conflict`` on PUT (a changed base)    412: the file changed since the request began
``Conflict``, ``Exists``, ``NotEmpty``  409
``QuotaExceeded``                       507 Insufficient Storage, nothing kept
``TooLarge``                            413
anything else                           its own status (``LoftError.status``)
======================================= ===============================================

The ETag of a file is its ``rev`` (the journal sequence of its last change), a strong
validator: ``If-Match`` on PUT compares it, and the commit is conditional on it too,
so a change landing while the body uploads is refused, not overwritten. Folders have
no ETag. Symbolic links are not shown. Dead properties and locks are WsgiDAV's
(``backend.server.dav``), by path.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from backend.errors import Conflict, LoftError
from backend.server.files import STORE_BATCH, Account, Files, Node, Upload, split
from backend.server.files_tree import check_write

T = TypeVar("T")
ACCOUNT = "loft.account"
"""The environ key of the ``files.Account`` the bridge authenticated."""
NURSERY = "loft.nursery"
"""The environ key of the request's nursery (chunks stored while more arrive)."""


def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``fn(*args)`` on the trio loop; a Loft error as the WebDAV answer for it."""
    try:
        return trio.from_thread.run(fn, *args)
    except LoftError as err:
        raise DAVError(err.status, context_info=err.message) from None


def _parts(path: str) -> list[str]:
    try:
        return split(path)
    except LoftError as err:
        raise DAVError(err.status, context_info=err.message) from None


class LoftProvider(DAVProvider):  # type: ignore[misc]
    def __init__(self, files: Files) -> None:
        super().__init__()
        self.files = files

    def is_readonly(self) -> bool:
        return False

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        account: Account = environ[ACCOUNT]
        try:
            node = _call(self.files.resolve, account, _parts(path))
        except DAVError as err:
            if err.value == 404:
                return None
            raise
        return resource(self, path, environ, node)

    def node(self, path: str, environ: dict[str, Any]) -> Node | None:
        found = self.get_resource_inst(path, environ)
        return None if found is None else found.node


def resource(provider: LoftProvider, path: str, environ: dict[str, Any], node: Node) -> Any:
    if node.is_dir:
        return LoftFolder(provider, path, environ, node)
    return LoftFile(provider, path, environ, node)


class _Shared:
    """What files and folders share: the node, times, delete, move and copy."""

    provider: LoftProvider
    path: str
    environ: dict[str, Any]
    node: Node | None

    @property
    def account(self) -> Account:
        account: Account = self.environ[ACCOUNT]
        return account

    @property
    def files(self) -> Files:
        return self.provider.files

    def get_display_name(self) -> str:
        return self.node.name if self.node else util.get_uri_name(self.path)

    def get_creation_date(self) -> float | None:
        return self.get_last_modified()

    def get_last_modified(self) -> float | None:
        return self.node.entry["mtime"] / 1e9 if self.node else None

    def _target(self, dest_path: str) -> tuple[Node, str, Node | None]:
        """The folder, name and present entry (or None) at ``dest_path``."""
        parts = _parts(dest_path)
        if not parts:
            raise DAVError(HTTP_FORBIDDEN, context_info="cannot replace the root")
        parent = self.provider.node(util.get_uri_parent(dest_path), self.environ)
        if parent is None or not parent.is_dir:
            raise DAVError(409, context_info="the destination's folder does not exist")
        return parent, parts[-1], self.provider.node(dest_path, self.environ)

    def delete(self) -> None:
        assert self.node is not None
        _call(self.files.delete, self.account, self.node)
        self.remove_all_properties(recursive=True)  # type: ignore[attr-defined]
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]

    def handle_move(self, dest_path: str) -> bool:
        """Refuse a move the roles forbid before WsgiDAV clears the destination (then
        let it go on: ``move_recursive``, or a copy and a delete between namespaces)."""
        assert self.node is not None
        parent = self.provider.node(util.get_uri_parent(dest_path), self.environ)
        for node in (self.node.outer or self.node, parent):
            if node is not None:
                try:
                    check_write(node)
                except LoftError as err:
                    raise DAVError(err.status, context_info=err.message) from None
        return False

    def support_recursive_move(self, dest_path: str) -> bool:
        parent = self.provider.node(util.get_uri_parent(dest_path), self.environ)
        return self.node is not None and parent is not None and parent.ns == self.node.ns

    def move_recursive(self, dest_path: str) -> list[Any]:
        assert self.node is not None
        parent, name, present = self._target(dest_path)
        _call(self.files.move, self.account, self.node, parent, name, present)
        self._dead_properties(dest_path, move=True, children=True)
        return []

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        assert self.node is not None
        parent, name, present = self._target(dest_path)
        if self.node.is_dir:
            if present is None:
                _call(self.files.mkdir, self.account, parent, name)
        else:
            _call(self.files.copy, self.account, self.node, parent, name, present)
        self._dead_properties(dest_path, move=is_move, children=False)

    def _dead_properties(self, dest_path: str, move: bool, children: bool) -> None:
        props = self.provider.prop_manager
        if props is None:
            return
        source = self.get_ref_url()  # type: ignore[attr-defined]
        dest = self.provider.get_resource_inst(dest_path, self.environ).get_ref_url()
        if move:
            props.move_properties(source, dest, with_children=children, environ=self.environ)
        else:
            props.copy_properties(source, dest, self.environ)


class LoftFile(_Shared, DAVNonCollection):  # type: ignore[misc]
    def __init__(self, provider: LoftProvider, path: str, environ: dict[str, Any],
                 node: Node | None, parent: Node | None = None) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.provider, self.node, self.parent = provider, node, parent

    def get_content_length(self) -> int:
        return self.node.size if self.node else 0

    def get_content_type(self) -> str:
        guessed, _ = mimetypes.guess_type(self.path)
        return guessed or "application/octet-stream"

    def get_etag(self) -> str | None:
        return str(self.node.rev) if self.node else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> Any:
        assert self.node is not None
        return self.files.reader(self.node)

    def begin_write(self, *, content_type: str | None = None) -> _Writer:
        return _Writer(self)

    def end_write(self, *, with_errors: bool) -> None:
        return None


@dataclass
class _Storing:
    """One batch of chunks being stored in the background of its request."""

    done: trio.Event = field(default_factory=trio.Event)
    error: LoftError | None = None


class _Writer:
    """The body of a PUT: cut as it arrives, its new chunks stored in batches (one
    stored in the request's nursery while the next arrives and is cut), and on
    ``close`` one commit, conditional on the revision the request began with."""

    def __init__(self, target: LoftFile) -> None:
        self.target = target
        self.upload = Upload()
        self.batch: list[tuple[str, bytes]] = []
        self.storing: _Storing | None = None

    def write(self, data: bytes) -> None:
        self.batch += self.upload.feed(data)
        if sum(len(d) for _, d in self.batch) >= STORE_BATCH:
            self._store()

    def _store(self) -> None:
        batch, self.batch = self.batch, []
        self._settle()
        self.storing = trio.from_thread.run_sync(self._start, batch)

    def _start(self, batch: list[tuple[str, bytes]]) -> _Storing:
        storing = _Storing()

        async def store() -> None:
            try:
                await self.target.files.store(self.target.account, batch)
            except LoftError as err:
                storing.error = err
            finally:
                storing.done.set()

        nursery: trio.Nursery = self.target.environ[NURSERY]
        nursery.start_soon(store)
        return storing

    def _settle(self) -> None:
        """Wait for the batch being stored; its failure is the request's."""
        storing, self.storing = self.storing, None
        if storing is not None:
            trio.from_thread.run(storing.done.wait)
            if storing.error is not None:
                raise DAVError(storing.error.status, context_info=storing.error.message)

    def close(self) -> None:
        self.batch += self.upload.finish()
        self._store()
        self._settle()
        target = self.target
        parent = target.parent
        if parent is None:
            parent = target.provider.node(util.get_uri_parent(target.path), target.environ)
            if parent is None:
                raise DAVError(409, context_info="the folder was removed meanwhile")
        name = util.get_uri_name(target.path)
        try:
            target.node = trio.from_thread.run(
                target.files.save, target.account, parent, name, self.upload, target.node)
        except Conflict as err:
            raise DAVError(HTTP_PRECONDITION_FAILED, context_info=err.message) from None
        except LoftError as err:
            raise DAVError(err.status, context_info=err.message) from None


class LoftFolder(_Shared, DAVCollection):  # type: ignore[misc]
    def __init__(self, provider: LoftProvider, path: str, environ: dict[str, Any],
                 node: Node) -> None:
        DAVCollection.__init__(self, path, environ)
        self.provider, self.node = provider, node
        self._members: list[Any] | None = None

    def get_member_list(self) -> list[Any]:
        if self._members is None:
            assert self.node is not None
            children = _call(self.files.children, self.node)
            self._members = [
                resource(self.provider, util.join_uri(self.path, c.name), self.environ, c)
                for c in children if c.entry["kind"] in ("file", "dir")]
        return self._members

    def get_member_names(self) -> list[str]:
        return [m.name for m in self.get_member_list()]

    def get_member(self, name: str) -> Any:
        return next((m for m in self.get_member_list() if m.name == name), None)

    def support_recursive_delete(self) -> bool:
        return True

    def create_empty_resource(self, name: str) -> LoftFile:
        assert self.node is not None
        path = util.join_uri(self.path, name)
        if self.environ["REQUEST_METHOD"] == "PUT":  # the body's commit creates it
            return LoftFile(self.provider, path, self.environ, None, self.node)
        node = _call(self.files.write, self.account, self.node, name, _nothing(), None)
        return LoftFile(self.provider, path, self.environ, node)

    def create_collection(self, name: str) -> None:
        assert self.node is not None
        _call(self.files.mkdir, self.account, self.node, name)


async def _nothing() -> Any:
    return
    yield b""  # an async generator of no bytes
