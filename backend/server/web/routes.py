"""The web page's route table (mounted last in ``backend.server.app``) and its two
static files, served from the package with ``nosniff`` and revalidation."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from backend.server import links_pages
from backend.server.web import actions, downloads, linkpages, pages, signin, uploads
from backend.server.web.session import answer_web_errors

STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_files = resources.files("backend.server.web") / "static"


@answer_web_errors
async def static(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in STATIC:
        return Response("not found", 404, media_type="text/plain")
    body = (_files / name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    return [
        Route("/", pages.home, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/signin", signin.signin_page, methods=["GET"]),
        Route("/signin", signin.signin, methods=["POST"]),
        Route("/signout", signin.signout, methods=["POST"]),
        Route("/files/{path:path}", pages.browse, methods=["GET"]),
        Route("/versions/{path:path}", pages.versions, methods=["GET"]),
        Route("/shared", pages.shared, methods=["GET"]),
        Route("/content/{path:path}", downloads.content, methods=["GET", "HEAD"]),
        Route("/zip/{path:path}", downloads.zip_folder, methods=["GET"]),
        Route("/act/mkdir", actions.mkdir, methods=["POST"]),
        Route("/act/move", actions.move, methods=["POST"]),
        Route("/act/delete", actions.delete, methods=["POST"]),
        Route("/act/restore", actions.restore, methods=["POST"]),
        Route("/act/share", actions.share, methods=["POST"]),
        Route("/act/unshare", actions.unshare, methods=["POST"]),
        Route("/upload", uploads.start, methods=["POST"]),
        Route("/upload/{id}", uploads.status, methods=["GET"]),
        Route("/upload/{id}", uploads.piece, methods=["PUT"]),
        Route("/upload/{id}", uploads.abandon, methods=["DELETE"]),
        Route("/upload/{id}/finish", uploads.finish, methods=["POST"]),
        Route("/links", linkpages.listing, methods=["GET"]),
        Route("/links", linkpages.create, methods=["POST"]),
        Route("/links/revoke", linkpages.revoke, methods=["POST"]),
        Route("/l/{token}", links_pages.show, methods=["GET", "HEAD"]),
        Route("/l/{token}", links_pages.unlock, methods=["POST"]),
        Route("/l/{token}/{path:path}", links_pages.show, methods=["GET", "HEAD"]),
    ]
