"""Slurm's ``PrivateData=jobs`` on the shared loopback cluster, for one block.

``cluster.py private-data on`` adds the line to slurm.conf and slurmdbd.conf
and has the running daemons reread them (``scontrol reconfigure``, SIGHUP to
slurmdbd); it returns once both report the new value. Other sessions run
tests on the same cluster meanwhile, so the window is kept short and always
closed again in a ``finally``, also when the block fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

from cluster_fixture import CLUSTER_SCRIPT

SWITCH_TIMEOUT_S = 120  # the script waits up to 60 s for the daemons itself


def set_private_data(on: bool, attempts: int = 3) -> None:
    """Turn ``PrivateData=jobs`` on or off in the running slurmctld and slurmdbd.

    Fault tests of other sessions stop and restart these daemons: a switch
    that finds one down is repeated once it may be back.
    """
    setting = "on" if on else "off"
    for attempt in range(attempts):
        if attempt:
            time.sleep(5)
        done = subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), "private-data", setting],
            capture_output=True,
            text=True,
            timeout=SWITCH_TIMEOUT_S,
            check=False,
        )
        if done.returncode == 0:
            return
    raise AssertionError(f"cluster.py private-data {setting} failed: {done.stderr[-2000:]}")


@contextlib.contextmanager
def private_jobs() -> Iterator[None]:
    """``PrivateData=jobs`` for the block: no user sees another's jobs in Slurm."""
    try:
        set_private_data(True)  # inside: a switch that fails half-way is undone too
        yield
    finally:
        set_private_data(False)
