"""The FUSE filesystem that mounts a Loft workspace."""
