"""The client of a namespace's past on the server (``backend.server.history_api``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from backend.client import Client


class History:
    """A namespace's past on the server (``backend.server.history``), for the mount's
    ``.versions`` folders and the ``versions``, ``restore`` and ``snapshot`` commands."""

    def __init__(self, client: Client, ns: int) -> None:
        self.client = client
        self.base = f"/ns/{ns}"

    async def past(
        self, *, at: int | None = None, time: int | None = None, path: str | None = None,
        entry: str | None = None, name: str | None = None, children: bool = False,
    ) -> dict[str, Any]:
        """``{seq, time, entry, children}``: an entry as it was at sequence ``at`` or
        instant ``time``, found by ``path``, by ``entry`` id, or by ``name`` in the
        folder ``entry``."""
        params: dict[str, Any] = {"children": "1" if children else "0"}
        for key, value in (("at", at), ("time", time), ("path", path), ("entry", entry),
                           ("name", name)):
            if value is not None:
                params[key] = value
        result: dict[str, Any] = await self.client.call("GET", f"{self.base}/past", params=params)
        return result

    async def place(self, parent: str, name: str) -> list[dict[str, Any]]:
        answer = await self.client.call(
            "GET", f"{self.base}/place", params={"parent": parent, "name": name}
        )
        result: list[dict[str, Any]] = answer["versions"]
        return result

    async def names(self, parent: str) -> list[str]:
        answer = await self.client.call("GET", f"{self.base}/place", params={"parent": parent})
        return [str(n) for n in answer["names"]]

    async def days(self) -> list[int]:
        return [int(d) for d in (await self.client.call("GET", f"{self.base}/days"))["days"]]

    async def instants(self, start: int, end: int) -> list[tuple[int, int]]:
        answer = await self.client.call(
            "GET", f"{self.base}/instants", params={"from": start, "to": end}
        )
        return [(int(t), int(s)) for t, s in answer["instants"]]

    async def snapshots(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (
            await self.client.call("GET", f"{self.base}/snapshots")
        )["snapshots"]
        return result

    async def snapshot(self, name: str, path: str = "/") -> dict[str, Any]:
        answer = await self.client.call(
            "POST", f"{self.base}/snapshots", body={"name": name, "path": path}
        )
        result: dict[str, Any] = answer["snapshot"]
        return result

    async def drop_snapshot(self, name: str) -> None:
        await self.client.call("DELETE", f"{self.base}/snapshots/{quote(name, safe='')}")
