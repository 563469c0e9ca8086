"""Whether this device reaches its server, as the uploader and the follower see it,
and whether the server refuses its changes for the user's quota."""

from __future__ import annotations

import logging

from backend.errors import LoftError

log = logging.getLogger("loft.sync")


class Link:
    def __init__(self) -> None:
        self.online = False
        self.last_error = ""
        self.over_quota = ""
        """The server's words while it refuses this device's changes for quota, else ""."""

    def up(self) -> None:
        if not self.online and self.last_error:
            log.info("server reachable again")
        self.online = True

    def down(self, err: LoftError) -> None:
        """Note a failure; said in the log when the link goes down or the reason changes."""
        if self.online or self.last_error != str(err):
            log.warning("server unreachable, working offline: %s", err)
        self.online, self.last_error = False, str(err)

    def quota_refused(self, err: LoftError) -> None:
        """The server answered, refusing a change for quota; said once, on entering."""
        self.up()
        if not self.over_quota:
            log.warning("%s; changes wait in the journal", err)
        self.over_quota = str(err)

    def quota_ok(self) -> None:
        if self.over_quota:
            log.info("within quota again: the journal's changes go up")
        self.over_quota = ""
