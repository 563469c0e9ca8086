"""The web page's links: the user's links, making one, revoking one.

=================================== ===============================================
route (form fields)                 page
=================================== ===============================================
GET  /links                         the user's live links: path, expiry, uses
POST /links (path, [days],          a new link (``backend.server.links_api``); the
     [password])                    page shows its URL, this once
POST /links/revoke (id)             the link stops working at once; back to /links
=================================== ===============================================
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backend.errors import BadRequest
from backend.server import links
from backend.server.links_api import list_links, make_link, revoke_link
from backend.server.web.pages import context
from backend.server.web.render import page
from backend.server.web.session import Session, form_action, signed_in

DAY = 24 * 3600


@signed_in
async def listing(request: Request, session: Session) -> Response:
    found = await list_links(request, session.caller)
    ctx = await context(request, session, links=found, created=None, path="")
    return page(request, "links.html", ctx, csrf=session.csrf)


@form_action
async def create(request: Request, session: Session, form: dict[str, str]) -> Response:
    days = form.get("days", "") or "7"
    if not days.isdigit() or not 0 < int(days) <= links.MAX_TTL // DAY:
        raise BadRequest("a link lives 1 to 3650 days")
    made = await make_link(request, session.caller, form.get("path", ""), int(days) * DAY,
                           form.get("password") or None)
    found = await list_links(request, session.caller)
    ctx = await context(request, session, links=found, created=made, path=made["path"])
    return page(request, "links.html", ctx, 201, csrf=session.csrf)


@form_action
async def revoke(request: Request, session: Session, form: dict[str, str]) -> Response:
    await revoke_link(request, session.caller, form.get("id", ""), None)
    return RedirectResponse("/links", 303)
