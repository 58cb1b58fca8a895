"""The wormhole method's codes: the one a download's job sends with, and the client's of an upload.

A magic-wormhole code is ``NAMEPLATE-PASSWORD``: the nameplate (digits)
names the channel on the mailbox server that both ends claim, the whole
code is the password of their key exchange (PAKE). For an upload the
client's ``wormhole send`` has the mailbox allocate the code and pyfirecrest
sends it (``transferDirectives.wormholeCode``); the job receives with it.
For a download the server makes the code and answers it; the job sends
with it and the client receives.

FirecREST draws a download's nameplate from 1-99, the very numbers the
mailbox allocates to uploads (smallest free first), so a download can crowd
an upload's channel. Here the nameplate is drawn from nine-digit numbers,
far above any the mailbox allocates, and the password is 64 random bits.
"""

from __future__ import annotations

import re
import secrets

from hpcgate.server.errors import invalid_argument

CODE_FIELD = "transferDirectives.wormholeCode"
# What the job's command line accepts: a numeric nameplate, a hyphen, then
# words (letters, digits, hyphens), as magic-wormhole's codes are.
_CODE = re.compile(r"[0-9]{1,12}-[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
MAX_CODE_LENGTH = 200


def new_code() -> str:
    """A fresh code for a download: a nine-digit nameplate and a 64-bit password."""
    nameplate = 100_000_000 + secrets.randbelow(900_000_000)
    return f"{nameplate}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def client_code(code: str | None) -> str:
    """The upload's code as the client sent it, once it is one (INVALID_ARGUMENT otherwise)."""
    if not code:
        raise invalid_argument(CODE_FIELD, "is required for a wormhole upload")
    if len(code) > MAX_CODE_LENGTH or not _CODE.fullmatch(code):
        raise invalid_argument(
            CODE_FIELD,
            f"not a wormhole code (NAMEPLATE-WORDS, e.g. 7-guitarist-revenge): {code[:100]!r}",
            "INVALID_WORMHOLE_CODE",
        )
    return code
