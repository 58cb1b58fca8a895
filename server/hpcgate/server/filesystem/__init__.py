"""Filesystem operations on the cluster, as the calling user (SFTP first, commands where needed)."""
