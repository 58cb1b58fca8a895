"""Slurm through its REST API (slurmrestd): the foundation of the ``slurm-rest`` plug-in.

:mod:`.tokens` mints the per-user JWTs slurmrestd passes on to slurmctld;
:mod:`.client` sends requests as a user, detects the OpenAPI version and
classifies failures. The status and jobs adapters built on them (and their
entry in :mod:`hpcgate.server.scheduler.plugins`) are still to come.
"""
