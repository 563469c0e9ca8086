"""Whether this device reaches its server, as the uploader and the follower see it."""

from __future__ import annotations

import logging

from backend.errors import LoftError

log = logging.getLogger("loft.sync")


class Link:
    def __init__(self) -> None:
        self.online = False
        self.last_error = ""

    def up(self) -> None:
        if not self.online and self.last_error:
            log.info("server reachable again")
        self.online = True

    def down(self, err: LoftError) -> None:
        """Note a failure; said in the log when the link goes down or the reason changes."""
        if self.online or self.last_error != str(err):
            log.warning("server unreachable, working offline: %s", err)
        self.online, self.last_error = False, str(err)
