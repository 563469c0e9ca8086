"""The Loft server: HTTP API, metadata and block stores, change notifier, auth."""
