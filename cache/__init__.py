"""The device-side LMDB cache: tree replica, chunk cache, write journal."""
