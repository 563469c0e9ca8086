"""The web page over https: its session cookie is ``Secure`` there (and only there),
so a browser never sends it over plain http."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx

from tests.conftest import PASSWORD, Server
from tests.test_tls import ca, tls_files, tls_server

__all__ = ["ca", "tls_files", "tls_server"]  # the fixtures this module runs on


def test_the_session_cookie_is_secure_under_tls(tls_server: Server) -> None:
    assert tls_server.tls is not None
    authority: Path = tls_server.tls[2]
    trusted = ssl.create_default_context(cafile=authority)
    with httpx.Client(base_url=tls_server.url, verify=trusted) as client:
        page = client.get("/signin").text
        nonce = re.search(r'name="nonce" value="([^"]+)"', page)
        assert nonce
        answer = client.post("/signin", data={"nonce": nonce[1], "user": "alice",
                                               "password": PASSWORD})
    assert answer.status_code == 303
    session = next(c for c in answer.headers.get_list("set-cookie")
                   if c.startswith("loft_session="))
    assert "; Secure" in session
    assert "HttpOnly" in session
    assert "SameSite=strict" in session
