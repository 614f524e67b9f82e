"""Configuration: a wrong value fails with one line naming the field; check-config says the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import ConfigError, load_settings, read_secret
from tests.procs import ROOT, child_env

GOOD = """
[[backends]]
name = "compute-vllm"
kind = "vllm"
base_url = "http://compute.home.arpa:8000/v1/"
api_key_env = "VLLM_API_KEY"

[[routes]]
pattern = "qwen3-*"
backend = "compute-vllm"

[[models]]
id = "coder"
backend = "compute-vllm"
upstream_id = "qwen3-coder:30b"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


def test_a_good_catalog_loads(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    assert s.catalog.backends[0].base_url == "http://compute.home.arpa:8000/v1"
    assert s.catalog.route_for("qwen3-8b") is not None and s.catalog.models[0].upstream_id == "qwen3-coder:30b"


@pytest.mark.parametrize(("mutation", "expected"), [
    (GOOD.replace('backend = "compute-vllm"\n\n[[models]]', 'backend = "gpu"\n\n[[models]]'),
     "config error: routes[0].backend: unknown backend 'gpu'"),
    (GOOD.replace('kind = "vllm"', 'kind = "tgi"'), "config error: backends[0].kind: Input should be"),
    (GOOD.replace("http://compute", "compute"), "config error: backends[0].base_url: String should match"),
    (GOOD + '\n[[models]]\nid = "coder"\nbackend = "compute-vllm"\n', "config error: models[1].id: duplicate model 'coder'"),
    (GOOD + '\n[[backendz]]\nname = "x"\n', "config error: backendz: Extra inputs are not permitted"),
    (GOOD.replace("[[routes]]", "[[routes]\n"), "invalid TOML"),
])
def test_a_bad_catalog_fails_with_one_line_naming_the_field(tmp_path: Path, mutation: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, mutation))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"^config error: APPLIANCE_PORT: "):
        load_settings()
    monkeypatch.setenv("APPLIANCE_PORT", "8080")
    monkeypatch.setenv("APPLIANCE_KNOWLEDGE__CHUNK_TOKENS", "2")
    with pytest.raises(ConfigError, match=r"^config error: APPLIANCE_KNOWLEDGE__CHUNK_TOKENS: "):
        load_settings()


def test_check_config_prints_the_same_line_and_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace('kind = "vllm"', 'kind = "tgi"'))
    run = subprocess.run([sys.executable, "-m", "appliance", "check-config", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, env=child_env())
    assert run.returncode == 2 and run.stderr.startswith("config error: backends[0].kind:")
    assert len(run.stderr.strip().splitlines()) == 1
    ok = subprocess.run([sys.executable, "-m", "appliance", "check-config", "--config", str(ROOT / "examples" / "homelab.toml")],
                        capture_output=True, text=True, cwd=ROOT, env=child_env())
    assert ok.returncode == 0, ok.stderr
    assert "config ok: 4 backends" in ok.stdout


def test_a_bad_config_stops_serve_at_start(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace('backend = "compute-vllm"\n\n[[models]]', 'backend = "gpu"\n\n[[models]]'))
    run = subprocess.run([sys.executable, "-m", "appliance", "serve", "--config", str(bad), "--port", "0"],
                         capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=30)
    assert run.returncode == 2 and "routes[0].backend: unknown backend 'gpu'" in run.stderr


def test_secrets_come_from_systemd_credentials_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vllm-key").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    assert read_secret("VLLM_API_KEY", "vllm-key") == "from-credential"
    assert read_secret("VLLM_API_KEY", "missing") == "from-env"
    assert read_secret(None, None) is None


ROUTED = GOOD + """
[[models]]
id = "chat"
backend = "compute-vllm"
description = "everyday questions"

[[routers]]
id = "auto"
candidates = ["coder", "chat"]
default = "chat"
unlabelled = "builtin:roles"
"""


def test_workers_get_the_validated_catalog_from_a_file_however_big(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.server import worker_env

    settings = load_settings(write(tmp_path, ROUTED), state_dir=tmp_path / "state")
    env = worker_env(settings)
    # one environment string may hold 128 KiB; the shipped prompts alone are more
    assert max(len(k) + len(v.encode()) + 1 for k, v in env.items()) < 128 * 1024
    snapshot = Path(env["APPLIANCE_CATALOG_FILE"])
    assert snapshot.parent == tmp_path / "state" and snapshot.stat().st_mode & 0o077 == 0
    assert snapshot.stat().st_size > 128 * 1024
    (tmp_path / "catalog.toml").write_text(GOOD)   # the TOML changes after the start: workers do not see it
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = load_settings()
    assert worker.catalog == settings.catalog and len(worker.catalog.routers[0].unlabelled_prompts) >= 900
    snapshot.write_text('{"models": [{"id": 3}]}')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(f"config error: {snapshot}: models[0]") and "\n" not in str(err.value)
