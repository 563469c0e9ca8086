"""Accounts against a real ``loft serve`` on every back end: login throttling, the
password derivation's own limiter, logout, devices and their revocation, password
change, account removal, and tokens renewed by use.

Throttling state lives in the server process, and every client here is 127.0.0.1:
each test throttles only accounts of its own, and all of them together stay well
within the address budget (``throttle.ADDRESS``).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio
import trio.lowlevel

from backend.server import throttle
from backend.server.auth import DEFAULT_TOKEN_TTL, token_hash
from backend.server.database import Row, Tx
from backend.server.metadata import MetadataStore
from tests.conftest import PASSWORD, Device, Server, loft
from tests.test_api import (
    Account,
    NewAccount,
    acct,
    new_account,
    raw,
    refused,
    upload,
    user_store,
)
from tools import cli
from tools.home import Device as HomeDevice
from tools.home import save_device

__all__ = ["acct", "new_account", "user_store"]  # fixtures, shared with test_api

NewHome = Callable[..., Awaitable[Device]]

NEW_PASSWORD = "a new password, longer"


async def login_answer(server: Server, user: str, password: str = PASSWORD) -> httpx.Response:
    return await raw(server, "POST", "/login",
                     body={"user": user, "password": password, "device": "probe"})


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    [line] = lines
    assert line.startswith("loft: "), line
    return line


# --- throttling --------------------------------------------------------------------


def test_failures_past_the_budget_bar_a_key_for_doubling_delays() -> None:
    now = [0.0]
    t = throttle.Throttle(throttle.Budget(free=3, base=1.0, cap=8.0, forget=60.0), lambda: now[0])
    assert [t.failed("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert t.wait("a") == 1.0
    assert t.wait("b") == 0.0
    now[0] += 1.0
    assert t.wait("a") == 0.0
    assert [t.failed("a") for _ in range(4)] == [2.0, 4.0, 8.0, 8.0]  # capped
    assert t.first_refusal("a")
    assert not t.first_refusal("a")
    now[0] += 8.0 + 10 * 60.0  # ten failures leak away in ten minutes
    assert t.wait("a") == 0.0
    assert t.failed("a") == 0.0
    t.succeeded("a")
    assert t.wait("a") == 0.0


def test_the_throttle_keeps_at_most_max_keys() -> None:
    now = [0.0]
    t = throttle.Throttle(throttle.Budget(free=1, base=1.0, cap=1.0, forget=1.0),
                          lambda: now[0], max_keys=10)
    for i in range(100):
        now[0] += 0.01
        t.failed(f"k{i}")
    assert len(t._records) <= 10
    assert t.wait("k99") > 0  # the newest is kept


async def test_wrong_passwords_are_throttled_per_account(
    server: Server, new_account: NewAccount
) -> None:
    target, other = await new_account(), await new_account()
    for _ in range(throttle.ACCOUNT.free):
        refused(await login_answer(server, target.user, "not the password"), 401, "unauthorized")
    barred = await login_answer(server, target.user)  # even the right password waits
    body = refused(barred, 429, "too_many_attempts")
    wait = int(barred.headers["retry-after"])
    assert 1 <= wait <= throttle.ACCOUNT.base * 2
    assert body["detail"] == {"retry_after": wait}
    assert (await login_answer(server, other.user)).status_code == 200
    assert server.log is not None
    assert f"login throttled: account {target.user!r} from 127.0.0.1" in server.log.read_text()
    await trio.sleep(wait)  # the time the server named: then the right password works
    answer = await login_answer(server, target.user)
    assert answer.status_code == 200, answer.content


async def test_a_chunk_get_stays_fast_while_30_logins_run(
    server: Server, acct: Account, new_account: NewAccount
) -> None:
    crowd = await new_account()
    async with acct.client() as c:
        cid, _ = await upload(c, b"read me while the logins run" * 100)

        async def timed_get() -> float:
            start = time.perf_counter()
            await c.get_chunk(cid)
            return time.perf_counter() - start

        idle = statistics.median([await timed_get() for _ in range(9)])
        busy: list[float] = []
        answers: list[int] = []

        async def one_login() -> None:
            answers.append((await login_answer(server, crowd.user)).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(one_login)
            await trio.lowlevel.checkpoint()
            while len(answers) < 30:
                busy.append(await timed_get())
    assert answers == [200] * 30
    assert len(busy) >= 3, busy
    assert statistics.median(busy) < 10 * idle, (idle, busy)


# --- logout and devices --------------------------------------------------------------


@pytest.fixture
def new_home(tmp_path: Path, new_account: NewAccount) -> NewHome:
    """``await new_home(user=None, device="dev")``: a device home logged in as
    ``loft login`` leaves it, without the seconds of its subprocesses."""

    async def make(user: str | None = None, device: str = "dev") -> Device:
        account = await new_account(user, device)
        home = tmp_path / f"home-{account.user}-{device}"
        save_device(home, HomeDevice(account.server.url, account.user, device, account.token,
                                     account.root_ns, 0))
        return Device(account.server, account.user, home)

    return make


async def test_logout_revokes_the_token_and_forgets_the_device(new_home: NewHome) -> None:
    device = await new_home()
    token = device.token
    assert "revoked on the server" in ok(device.run("logout"))
    assert not (device.home / "device.json").exists()
    refused(await raw(device.server, "GET", "/whoami", token), 401, "unauthorized")
    assert "not logged in" in one_line_error(device.run("ls"))


async def test_devices_are_listed_and_a_revoked_one_is_refused_at_once(
    new_home: NewHome,
) -> None:
    laptop = await new_home(device="laptop")
    phone = await new_home(laptop.user, "phone")
    phone_token = phone.token
    lines = ok(laptop.run("devices")).splitlines()
    assert lines[0].split()[:2] == ["DEVICE", "CREATED"]
    names = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(names) == {"laptop", "phone"}
    assert names["laptop"][1] == "*"
    assert len(names["phone"]) == 4  # name, created, last seen, expires

    assert "revoked device phone (1 token(s))" in ok(laptop.run("devices", "revoke", "phone"))
    refused(await raw(phone.server, "GET", "/whoami", phone_token), 401, "unauthorized")
    assert "revoked" in one_line_error(phone.run("ls"))
    async with laptop.client() as c:  # the other device keeps working
        assert [d["device"] for d in await c.devices()] == ["laptop"]
    again = await raw(laptop.server, "POST", "/devices/revoke", laptop.token,
                      body={"device": "phone"})
    refused(again, 404, "not_found")


# --- server-side account commands ----------------------------------------------------


async def test_passwd_revokes_every_token_and_sets_the_new_password(
    server: Server, new_home: NewHome
) -> None:
    device = await new_home()
    out = ok(loft("user", "passwd", device.user, *server.stores.args(), password=NEW_PASSWORD))
    assert "1 token(s) revoked" in out
    refused(await raw(server, "GET", "/whoami", device.token), 401, "unauthorized")
    refused(await login_answer(server, device.user), 401, "unauthorized")
    assert (await login_answer(server, device.user, NEW_PASSWORD)).status_code == 200


async def test_remove_refuses_the_account_and_its_token_after_a_shared_namespace(
    server: Server,
    acct: Account,
    new_account: NewAccount,
    user_store: MetadataStore,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gone = await new_account()
    remove = ("user", "remove", gone.user, *server.stores.args())
    share = (gone.root_ns, acct.user)

    def add_member(tx: Tx) -> None:
        tx.execute("INSERT INTO members (ns, user_id, role) SELECT ?, id, 'viewer' FROM users"
                   " WHERE name = ?", share)

    await user_store.account_tx(add_member)
    assert "shared with others" in one_line_error(loft(*remove))
    await user_store.account_tx(lambda tx: tx.execute(
        "DELETE FROM members WHERE ns = ? AND role = 'viewer'", (gone.root_ns,)))
    assert "removed with 1 namespace(s)" in ok(loft(*remove))
    refused(await raw(server, "GET", "/whoami", gone.token), 401, "unauthorized")
    refused(await login_answer(server, gone.user), 401, "unauthorized")
    assert "no user" in one_line_error(loft(*remove))
    with pytest.raises(SystemExit):
        cli.main(["user", "remove", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the namespaces it owns with all their files and history" in help_text
    assert "`loft gc` then reclaims the chunks" in help_text


# --- token life ----------------------------------------------------------------------


async def test_use_renews_a_token_and_an_expired_one_is_refused_and_purged(
    server: Server, acct: Account, user_store: MetadataStore
) -> None:
    hashed = token_hash(acct.token)
    now = int(time.time())

    def expiry(tx: Tx) -> list[Row]:
        return [tuple(int(v) for v in r) for r in tx.execute(
            "SELECT t.expires, r.last_seen FROM tokens t JOIN token_use r ON r.hash = t.hash"
            " WHERE t.hash = ?", (hashed,))]

    [(expires, seen)] = await user_store.account_tx(expiry, False)
    assert now <= expires - DEFAULT_TOKEN_TTL <= now + 2
    assert now - 60 <= seen <= now + 2
    async with acct.client() as c:
        await c.whoami()  # used within the hour: no write
        assert await user_store.account_tx(expiry, False) == [(expires, seen)]
        await user_store.account_tx(lambda tx: tx.execute(  # last renewed 2 h ago
            "UPDATE token_use SET last_seen = ? WHERE hash = ?", (now - 7200, hashed)))
        await user_store.account_tx(lambda tx: tx.execute(
            "UPDATE tokens SET expires = ? WHERE hash = ?", (now + 100, hashed)))
        await c.whoami()
        [(renewed, seen)] = await user_store.account_tx(expiry, False)
        assert renewed >= now + DEFAULT_TOKEN_TTL
        assert seen >= now
        [row] = [d for d in await c.devices() if d["current"]]
        assert (row["last_seen"], row["expires"]) == (seen, renewed)
    await user_store.account_tx(lambda tx: tx.execute(
        "UPDATE tokens SET expires = ? WHERE hash = ?", (now - 1, hashed)))
    refused(await raw(server, "GET", "/whoami", acct.token), 401, "unauthorized")
    assert await user_store.account_tx(
        lambda tx: tx.execute("SELECT hash FROM tokens WHERE hash = ?"
                              " UNION ALL SELECT hash FROM token_use WHERE hash = ?",
                              (hashed, hashed)), False) == []
