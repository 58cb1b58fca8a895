"""The three distributions build, install alone into fresh venvs and import.

Builds the wheels as `make dist` does, installs each into its own venv with
its dependencies from the package index (the server and the edge get the
client's wheel beside them, as they would from the index), and imports it.
The client's wheel must carry no server or edge code: workflow engines
install it alone. Slow-ish (three venvs), so one module.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the three wheels into a temporary dist/ (what `make dist` runs)."""
    out = tmp_path_factory.mktemp("dist")
    for part in ("clients", "server", "edge"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "build",
                "-q",
                "--wheel",
                "--outdir",
                str(out),
                str(ROOT / part),
            ],
            check=True,
            capture_output=True,
        )
    found = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    assert set(found) == {"hpcgate", "hpcgate_server", "hpcgate_edge"}, found
    return found


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter's pip acting on the venv of ``python`` (no pip of its own to seed)."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *args],
        check=True,
        capture_output=True,
        text=True,
    )


def _install(env: Path, *wheels: Path) -> Path:
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    _pip(python, "install", "-q", *map(str, wheels))
    return python


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_client_wheel_holds_only_stubs_client_and_cli(wheels: dict[str, Path]) -> None:
    names = _names(wheels["hpcgate"])
    code = [name for name in names if name.startswith("hpcgate/")]
    assert not [name for name in code if name.startswith(("hpcgate/server", "hpcgate/edge"))]
    assert "hpcgate/__init__.py" not in names  # a namespace shared with the other two
    for package in ("v1", "client", "cli"):
        assert f"hpcgate/{package}/py.typed" in names
    # Typing stubs for the sync and the asyncio stub APIs alike.
    pyi = next(name for name in names if name == "hpcgate/v1/status_pb2_grpc.pyi")
    with zipfile.ZipFile(wheels["hpcgate"]) as archive:
        text = archive.read(pyi).decode()
    assert "class StatusStub:" in text and "class StatusAsyncStub(StatusStub):" in text


@pytest.mark.parametrize(
    ("dist", "imports"),
    [
        ("hpcgate", "import hpcgate.v1.status_pb2_grpc, hpcgate.client, hpcgate.cli"),
        ("hpcgate_server", "import hpcgate.server.app"),
        ("hpcgate_edge", "import hpcgate.edge.app"),
    ],
)
def test_each_wheel_installs_alone_and_imports(
    wheels: dict[str, Path], tmp_path: Path, dist: str, imports: str
) -> None:
    extra = () if dist == "hpcgate" else (wheels["hpcgate"],)
    python = _install(tmp_path / "venv", wheels[dist], *extra)
    subprocess.run([str(python), "-c", imports], check=True, cwd=tmp_path)
    listed = _pip(python, "list", "--format=freeze").stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    if dist == "hpcgate":
        # Installed alone, the client brings none of the server's or edge's stack.
        assert not installed & {"hpcgate-server", "hpcgate-edge", "asyncssh", "starlette"}
        assert (python.parent / "hpcgate").exists()
