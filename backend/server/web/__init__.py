"""The web page at ``/``: server-rendered pages and a little JavaScript, no build step.

Its parts: ``session`` (cookies over device tokens, CSRF, security headers),
``signin``, ``pages`` (folders, versions, shared with me), ``actions`` (forms that
change files), ``uploads`` (resumable, chunked as they arrive), ``downloads`` (files
with ranges, folders as zips, by way of ``content``), ``linkpages`` (the user's links;
what a link's holder sees is ``backend.server.links_pages``), ``render`` (templates)
and ``paths`` (checked paths, the file service ``backend.server.files``).
"""
