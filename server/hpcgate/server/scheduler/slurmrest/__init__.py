"""Slurm through its REST API (slurmrestd): the ``slurm-rest`` plug-in.

:mod:`.tokens` mints the per-user JWTs slurmrestd passes on to slurmctld;
:mod:`.client` sends requests as a user, detects the OpenAPI version and
classifies failures; :mod:`.status` and :mod:`.jobs` are the adapters (what
v0.0.38 lacks they take from the CLI plug-in over SSH, one command each);
:mod:`.submission` turns a job description into slurmrestd's ``job/submit``.
"""
