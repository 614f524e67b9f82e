"""Helpers for the deployment tests: run install.sh into a temporary root, snapshot trees."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "install.sh"

# What each role puts on a host, beyond what every role gets. Written out by hand on purpose:
# the test says what an operator will find, install.sh must agree.
COMMON = {
    "/opt", "/opt/appliance", "/opt/appliance/.install-manifest", "/opt/appliance/OPERATORS.md",
    "/etc", "/etc/appliance", "/etc/appliance/appliance.env", "/etc/credstore",
    "/etc/systemd", "/etc/systemd/system",
}
APP = {"/opt/appliance/bin", "/opt/appliance/bin/appliance", "/etc/appliance/catalog.toml"}
CONTAINERS = {"/etc/containers", "/etc/containers/systemd"}
ROLE_FILES = {
    "desktop": APP | CONTAINERS | {
        "/etc/systemd/system/appliance-gateway.service",
        "/etc/systemd/system/appliance-inference.service",
        "/etc/systemd/system/appliance-desktop.target",
        "/etc/containers/systemd/appliance-nats.container",
        "/etc/containers/systemd/appliance-nats.volume",
        "/etc/appliance/nats", "/etc/appliance/nats/nats.conf",
    },
    "compute": APP | CONTAINERS | {
        "/etc/systemd/system/appliance-migrate.service",
        "/etc/systemd/system/appliance-persister.service",
        "/etc/systemd/system/appliance-compute.target",
        "/etc/containers/systemd/appliance-postgres.container",
        "/etc/containers/systemd/appliance-postgres.volume",
        "/etc/containers/systemd/appliance-vllm.container",
        "/etc/containers/systemd/appliance-llamacpp.container",
        "/etc/containers/systemd/appliance-models.volume",
        "/etc/appliance/postgres", "/etc/appliance/postgres/postgresql.conf",
        "/etc/credstore/postgres-password", "/etc/credstore/pgpass", "/etc/credstore/vllm-api-key",
    },
    "storage": CONTAINERS | {
        "/opt/appliance/libexec", "/opt/appliance/libexec/render-config",
        "/etc/systemd/system/appliance-storage.target",
        *(f"/etc/containers/systemd/appliance-{name}.container"
          for name in ("prometheus", "grafana", "loki", "tempo", "vector", "minio")),
        *(f"/etc/containers/systemd/appliance-{name}.volume"
          for name in ("prometheus", "grafana", "loki", "tempo", "minio")),
        "/etc/appliance/prometheus", "/etc/appliance/prometheus/prometheus.yml",
        "/etc/appliance/grafana", "/etc/appliance/grafana/provisioning",
        "/etc/appliance/grafana/provisioning/datasources",
        "/etc/appliance/grafana/provisioning/datasources/appliance.yaml",
        "/etc/appliance/grafana/provisioning/dashboards",
        "/etc/appliance/grafana/provisioning/dashboards/appliance.yaml",
        "/etc/appliance/grafana/dashboards", "/etc/appliance/grafana/dashboards/appliance-gateway.json",
        "/etc/appliance/loki", "/etc/appliance/loki/loki.yaml",
        "/etc/appliance/tempo", "/etc/appliance/tempo/tempo.yaml",
        "/etc/appliance/vector", "/etc/appliance/vector/vector.yaml",
        "/etc/credstore/grafana-admin-password", "/etc/credstore/minio-root-user",
        "/etc/credstore/minio-root-password",
    },
}
ROLE_FILES["all"] = ROLE_FILES["desktop"] | ROLE_FILES["compute"] | ROLE_FILES["storage"]


def expected_tree(role: str) -> set[str]:
    return COMMON | ROLE_FILES[role]


def snapshot(root: Path) -> dict[str, tuple[int, str, float]]:
    """Every path under root -> (mode, sha256 or 'dir', mtime): any change shows up."""
    out: dict[str, tuple[int, str, float]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            out["/" + str(path.relative_to(root))] = (st.st_mode, digest, st.st_mtime)
    return out


def run_install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["sh", str(INSTALL), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"install.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture()
def fake_artifact(tmp_path: Path) -> Path:
    """A stand-in for the packaged appliance: install.sh only copies it."""
    path = tmp_path / "artifact" / "appliance"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\necho 'appliance 0.0.0-test'\n")
    path.chmod(0o755)
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def need(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        pytest.skip(f"{tool} is not installed (Debian package: see packaging/OPERATORS.md, 'CI')")
    return found


# The packaged artifact, built once per source state (about 30 s) and cached.

SYSTEM_PYTHON = Path("/usr/bin/python3")


def source_hash() -> str:
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml", REPO / "packaging/build.sh",
             *sorted((REPO / "appliance").rglob("*.py")), *sorted((REPO / "sql").glob("*.sql"))]
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    for candidate in (Path("/var/cache/appliance-test"), Path(tempfile.gettempdir()) / "appliance-test"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise RuntimeError("no writable cache directory")


@pytest.fixture(scope="session")
def artifact() -> Path:
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("no system /usr/bin/python3 to run the artifact with")
    out = cache_root() / f"artifact-{source_hash()}"
    path = out / "appliance"
    if not path.is_file():
        for stale in out.parent.glob("artifact-*"):
            shutil.rmtree(stale, ignore_errors=True)
        proc = subprocess.run(["nice", "-n", "10", str(REPO / "packaging/build.sh"), "--out", str(out)],
                              capture_output=True, text=True, timeout=900)
        output = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "is ignored" not in line)
        assert proc.returncode == 0 and path.is_file(), f"build.sh failed ({proc.returncode}):\n{output[-3000:]}"
    return path
