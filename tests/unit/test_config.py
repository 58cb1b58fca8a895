"""Configuration validation: every error names its key, and start-up stops."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SKELETON_CONFIG
from hpcgate.server.config import ConfigError, Secret, load_config, parse_config


def _config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SKELETON_CONFIG)
    data.update(changes)
    return data


def test_valid_config_parses() -> None:
    settings = parse_config(SKELETON_CONFIG)
    assert [s.name for s in settings.systems] == ["daint", "eiger"]
    assert settings.system("DAINT") is settings.systems[0]
    assert settings.systems[0].ssh.pool.max_channels == 10
    assert settings.systems[0].ssh.pool.max_sftp_requests == 64


def test_wrong_type_names_the_key() -> None:
    data = _config()
    data["systems"][0]["ssh"]["port"] = "not-a-port"
    with pytest.raises(ConfigError, match=r"systems\.0\.ssh\.port"):
        parse_config(data)


def test_missing_required_key_names_the_key() -> None:
    data = _config()
    del data["systems"][1]["ssh"]["host"]
    with pytest.raises(ConfigError, match=r"systems\.1\.ssh\.host: Field required"):
        parse_config(data)


def test_unknown_key_is_refused() -> None:
    data = _config()
    data["systems"][0]["ssh"]["prot"] = 22
    with pytest.raises(ConfigError, match=r"systems\.0\.ssh\.prot"):
        parse_config(data)


def test_duplicate_system_names_are_refused() -> None:
    data = _config()
    data["systems"][1]["name"] = "Daint"
    with pytest.raises(ConfigError, match="duplicate system name"):
        parse_config(data)


def test_symmetric_and_none_algorithms_are_refused() -> None:
    data = _config(auth={"jwks_file": "/x", "algorithms": ["RS256", "HS256"]})
    with pytest.raises(ConfigError, match=r"auth\.algorithms.*HS256"):
        parse_config(data)


def test_secret_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCGATE_TEST_SECRET", "from-env")
    (tmp_path / "secret").write_text("from-file\n")
    assert Secret(env="HPCGATE_TEST_SECRET").reveal() == "from-env"
    assert Secret(file=tmp_path / "secret").reveal() == "from-file"
    with pytest.raises(ValueError, match="exactly one"):
        Secret(value="a", env="B")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("systems: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_server_refuses_to_start_naming_the_key(tmp_path: Path) -> None:
    data = _config()
    data["systems"][0]["ssh"]["timeouts"] = {"connect": "soon"}
    path = tmp_path / "hpcgate.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "hpcgate.server", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "systems.0.ssh.timeouts.connect" in result.stderr


def test_coordination_is_in_memory_by_default_and_redis_needs_a_url() -> None:
    assert parse_config(SKELETON_CONFIG).coordination.backend == "memory"
    data = copy.deepcopy(SKELETON_CONFIG)
    data["coordination"] = {"backend": "redis"}
    with pytest.raises(ConfigError, match=r"coordination: .*url: required with backend redis"):
        parse_config(data)
    data["coordination"] = {"backend": "redis", "url": "redis://127.0.0.1:6379/0"}
    settings = parse_config(data)
    assert settings.coordination.url == "redis://127.0.0.1:6379/0"
    assert settings.coordination.lease_ttl == 10.0


def test_transfer_methods_default_to_s3_when_the_system_has_s3() -> None:
    data = _config()
    system = data["systems"][0]
    system.pop("data_operation", None)
    system["s3"] = {
        "endpoint": "http://s3",
        "access_key": {"value": "a"},
        "secret_key": {"value": "b"},
    }
    methods = parse_config(data).systems[0].transfer_methods
    assert [m.service_type for m in methods] == ["s3"]
    del system["s3"]
    assert parse_config(data).systems[0].transfer_methods == ()


def test_streamer_method_keys_are_checked_by_name() -> None:
    data = _config()
    streamer: dict[str, Any] = {"service_type": "streamer", "port_range": [5670, 5665]}
    data["systems"][0]["data_operation"] = {"data_transfer": [streamer]}
    with pytest.raises(ConfigError, match=r"systems\.0\.data_operation\.data_transfer\.0"):
        parse_config(data)
    streamer["port_range"] = [5665, 5670]
    streamer["wait_timout"] = 5
    with pytest.raises(ConfigError, match=r"data_transfer\.0\.streamer\.wait_timout"):
        parse_config(data)
    del streamer["wait_timout"]
    (method,) = parse_config(data).systems[0].transfer_methods
    assert method.service_type == "streamer"
    assert method.port_range == (5665, 5670)


def test_the_s3_method_needs_s3_and_no_method_comes_twice() -> None:
    data = _config()
    data["systems"][0].pop("s3", None)
    data["systems"][0]["data_operation"] = {"data_transfer": [{"service_type": "s3"}]}
    with pytest.raises(ConfigError, match="the s3 method needs the system's s3"):
        parse_config(data)
    twice = [{"service_type": "streamer"}, {"service_type": "streamer"}]
    data["systems"][0]["data_operation"] = {"data_transfer": twice}
    with pytest.raises(ConfigError, match="each method at most once"):
        parse_config(data)
