"""Server-rendered pages: the Jinja2 environment over the package's ``templates/``.

Autoescaping is on for every template: a file name is text wherever it shows, never
markup. Templates get ``human`` (sizes), ``when`` (times, UTC), ``href`` (a workspace
path as a URL path, every component percent-encoded) and ``plain`` (as a form holds
it), and every page the session's ``csrf`` token for its forms.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from backend.sizes import human

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("backend.server.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(seconds: int | float | None) -> str:
    if seconds is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def href(parts: list[str] | str) -> str:
    """``["a b", "c"]`` → ``/a%20b/c``: each component quoted, ``/`` between them."""
    items = [x for x in parts.split("/") if x] if isinstance(parts, str) else parts
    return "/" + "/".join(quote(part, safe="") for part in items)


def plain(parts: list[str]) -> str:
    """``["a b", "c"]`` → ``/a b/c``: a path as a form field holds it."""
    return "/" + "/".join(parts)


_env.globals.update(human=human, when=when, href=href, plain=plain)


def page(request: Request, template: str, context: dict[str, Any], status: int = 200,
         csrf: str = "") -> HTMLResponse:
    html = _env.get_template(template).render(request_path=request.url.path, csrf=csrf,
                                              **context)
    return HTMLResponse(html, status_code=status)
