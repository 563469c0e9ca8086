"""A browser's session of the web page, spoken over HTTP with httpx: sign in, the
CSRF token a page carries, form posts, resumable uploads. For the HTTP-level tests
of the web page and of links (the browser tests drive a real Chromium instead)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import PASSWORD


def signin_nonce(page: str) -> str:
    found = re.search(r'name="nonce" value="([^"]+)"', page)
    assert found, page[:500]
    return found[1]


class WebSession:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, follow_redirects=False, timeout=60)

    def close(self) -> None:
        self.http.close()

    def sign_in(self, user: str, password: str = PASSWORD) -> httpx.Response:
        nonce = signin_nonce(self.http.get("/signin").text)
        return self.http.post("/signin", data={"nonce": nonce, "user": user,
                                               "password": password, "next": "/files/"})

    @property
    def csrf(self) -> str:
        page = self.http.get("/files/")
        assert page.status_code == 200, page.status_code
        found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert found
        return found[1]

    def post(self, route: str, csrf: str | None = None, **fields: str) -> httpx.Response:
        """A form post with the session's CSRF token (or the one given)."""
        token = self.csrf if csrf is None else csrf
        return self.http.post(route, data={"csrf": token, **fields})

    def api(self, method: str, route: str, csrf: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        return self.http.request(method, route, headers=headers, **kwargs)

    def upload(self, path: str, data: bytes, piece: int | None = None) -> httpx.Response:
        """The whole upload protocol: start, every piece, finish; the last answer."""
        csrf = self.csrf
        started = self.api("POST", "/upload", csrf, json={"path": path, "size": len(data)})
        assert started.status_code == 201, started.text
        upload_id, size = started.json()["id"], piece or started.json()["piece"]
        offset = 0
        while offset < len(data):
            answer = self.api("PUT", f"/upload/{upload_id}?offset={offset}", csrf,
                              content=data[offset: offset + size])
            if answer.status_code != 200:
                return answer
            offset = answer.json()["offset"]
        return self.api("POST", f"/upload/{upload_id}/finish", csrf)

    def listing(self, path: str = "/") -> str:
        page = self.http.get(f"/files{path.rstrip('/')}/")
        assert page.status_code == 200, page.status_code
        return page.text
