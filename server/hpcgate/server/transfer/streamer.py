"""The streamer method's parts: secrets, coordinates, and the wait for the job to listen.

A streamer transfer is a job running firecrest-streamer's websocket server
(``scripts/streamer.sh``); the client connects to it directly, with the
``coordinates`` of the reply: base64url of the JSON
``{"ports": [first, last], "ips": [...], "secret": ...}``, as FirecREST
writes them and pyfirecrest (``streamer.streamer_client.set_coordinates``)
reads them. The client tries each address and port in turn, once.

pyfirecrest connects as soon as it sees the job RUNNING, and gives up
(silently) if nothing listens yet. So before answering, the server waits a
bounded time (``listen_timeout``) for the job's log to say where it
listens, and then names that one port; a job that is still queued by then
is answered with the whole range.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Sequence

from hpcgate.server.scheduler.commands import RunWithInput

# Seconds between two looks at the job's log while waiting for it to listen.
LISTEN_POLL_S = 0.2

# Prints the port the job's server listens on (firecrest-streamer's own
# words in the job's log); exit 3 if the job failed first, 2 if neither yet.
_LISTENING = r"""
[ -f "$1" ] || exit 2
port=$(sed -n 's|^Server is listening on ws://.*:\([0-9][0-9]*\)$|\1|p' -- "$1" | head -n 1)
[ -n "$port" ] && { echo "$port"; exit 0; }
grep -q 'FAILED: ' -- "$1" && exit 3
exit 2
"""


def new_secret() -> str:
    """A fresh shared secret for one transfer (as FirecREST's: 16 random bytes, URL-safe)."""
    return secrets.token_urlsafe(16)


def coordinates(ports: tuple[int, int], ips: Sequence[str], secret: str) -> str:
    """What the client needs to connect, encoded as FirecREST encodes it."""
    document = {"ports": list(ports), "ips": list(ips), "secret": secret}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


async def wait_listening(run: RunWithInput, log: str, patience: float) -> int | None:
    """The port the job logging to ``log`` listens on, once it does.

    None if it did not within ``patience`` seconds (still queued), or failed first.
    """
    give_up = time.monotonic() + patience
    while True:
        output = await run(["sh", "-c", _LISTENING, "sh", log])
        if output.exit_status == 0:
            try:
                return int(output.stdout.decode().strip())
            except ValueError:
                return None
        if output.exit_status == 3 or time.monotonic() + LISTEN_POLL_S > give_up:
            return None
        await asyncio.sleep(LISTEN_POLL_S)
