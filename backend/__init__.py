"""Loft's storage back end: the wire protocol, the client, and the server."""
