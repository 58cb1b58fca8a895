"""Named connection profiles in ``$XDG_CONFIG_HOME/hpcgate/profiles.json``.

One profile per site: the server's address, the default system, TLS, and
where the token comes from (a token, a token file, or OAuth2 client
credentials). The file holds secrets, so it is written owner-only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from hpcgate.client import ClientCredentials, StaticToken, TokenFile, TokenSource


def config_dir() -> Path:
    """Where hpcgate keeps its profiles (XDG base directory rules)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "hpcgate"


@dataclass
class Profile:
    """How to reach one site."""

    target: str
    system: str | None = None
    tls: bool = False
    root_certificates: str | None = None
    token: str | None = None
    token_file: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    def token_source(self) -> TokenSource:
        """The credentials this profile names."""
        if self.token_url and self.client_id and self.client_secret:
            return ClientCredentials(self.token_url, self.client_id, self.client_secret)
        if self.token_file:
            return TokenFile(self.token_file)
        if self.token:
            return StaticToken(self.token)
        raise ValueError("the profile has no credentials: run `hpcgate login` with one")


def _path() -> Path:
    return config_dir() / "profiles.json"


def load_all() -> dict[str, Profile]:
    """Every saved profile by name (none when the file does not exist)."""
    try:
        raw = json.loads(_path().read_text())
    except FileNotFoundError:
        return {}
    return {name: Profile(**fields) for name, fields in raw.items()}


def load(name: str) -> Profile:
    """The profile ``name``; a clear error when it was never saved."""
    profiles = load_all()
    if name not in profiles:
        raise KeyError(f"no profile {name!r}: run `hpcgate login --profile {name} ...`")
    return profiles[name]


def save(name: str, profile: Profile) -> Path:
    """Store ``profile`` as ``name`` (replacing it), owner-only."""
    profiles = load_all()
    profiles[name] = profile
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {
        key: {k: v for k, v in asdict(p).items() if v is not None} for key, p in profiles.items()
    }
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(body, out, indent=2)
    os.replace(path.with_suffix(".tmp"), path)
    return path
