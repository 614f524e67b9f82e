"""systemd units: `systemd-analyze verify` prints nothing, and every service scores <= 2.0.

verify exits 0 on a misspelt key and only warns on stderr, so any output is a failure. The
units are verified as installed (install.sh into a temporary root holding a copy of this
machine's systemd units), so ExecStart= and the target wiring are checked too.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, need, run_install

UNITS = sorted((REPO / "units").iterdir())
SERVICES = [u.name for u in UNITS if u.suffix == ".service"]
LONG_RUNNING = ["appliance-gateway.service", "appliance-inference.service", "appliance-persister.service"]
MAX_EXPOSURE = 2.0
SYSTEM_UNITS = Path("/lib/systemd/system")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All roles installed into a root that also has this machine's stock units."""
    need("systemd-analyze")
    root = tmp_path_factory.mktemp("root")
    artifact = root.parent / "appliance-artifact"
    artifact.write_text("#!/bin/sh\n")
    artifact.chmod(0o755)
    run_install("--role", "all", "--root", str(root), "--artifact", str(artifact))
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir()
    shutil.copy("/bin/sh", root / "bin/sh")  # appliance-migrate's retry loop
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def read_unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_verify_prints_nothing(installed: Path) -> None:
    units = [str(installed / "etc/systemd/system" / u.name) for u in UNITS]
    proc = analyze("verify", "--man=no", f"--root={installed}", *units)

    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_verify_catches_a_misspelt_key(installed: Path, tmp_path: Path) -> None:
    """The check above is only worth something if a mistake makes output."""
    bad = installed / "etc/systemd/system/appliance-typo.service"
    text = (REPO / "units/appliance-gateway.service").read_text()
    bad.write_text(text.replace("WatchdogSec=", "WatchDogSec="))
    try:
        proc = analyze("verify", "--man=no", f"--root={installed}", str(bad))
    finally:
        bad.unlink()
    assert "WatchDogSec" in proc.stdout + proc.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_security_exposure_at_most_2_0(service: str, installed: Path) -> None:
    proc = analyze("security", "--offline=yes", f"--root={installed}", "--threshold=20", service)

    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_services_notify_watchdog_and_restart(service: str) -> None:
    svc = read_unit(REPO / "units" / service)["Service"]

    assert svc["Type"] == "notify"
    assert int(svc["WatchdogSec"]) > 0
    assert svc["Restart"] == "on-failure"


@pytest.mark.parametrize("service", SERVICES)
def test_services_share_env_file_state_cache_and_user(service: str) -> None:
    text = (REPO / "units" / service).read_text()
    svc = read_unit(REPO / "units" / service)["Service"]

    assert svc["EnvironmentFile"] == "/etc/appliance/appliance.env"
    assert svc["StateDirectory"] == "appliance"
    assert svc["CacheDirectory"] == "appliance"
    assert svc["User"] == "appliance"
    # The zipapp unpacks its native libraries into the cache directory, never into $HOME.
    assert "SHIV_ROOT=%C/appliance" in text
    assert "APPLIANCE_STATE_DIR=%S/appliance" in text
    assert re.match(r"(/bin/sh -c 'until )?/opt/appliance/bin/appliance (serve|inference|persist|migrate)\b",
                    svc["ExecStart"]), svc["ExecStart"]


def test_gateway_lets_granian_workers_notify() -> None:
    assert read_unit(REPO / "units/appliance-gateway.service")["Service"]["NotifyAccess"] == "all"


def test_secrets_come_as_credentials_not_environment() -> None:
    text = (REPO / "units/appliance-gateway.service").read_text()

    assert "LoadCredential=vllm-api-key" in text
    assert "PGPASSFILE=%d/pgpass" in text
    assert "PASSWORD=" not in (REPO / "packaging/env/appliance.env").read_text()


def test_known_onnxruntime_breakers_stay_off() -> None:
    """~@resources denies onnxruntime's affinity/NUMA calls; ProcSubset=pid hides /proc/cpuinfo
    (both shown in a booted container by test_booted_systemd.py)."""
    for service in ("appliance-gateway.service", "appliance-inference.service"):
        text = (REPO / "units" / service).read_text()
        assert not re.search(r"^SystemCallFilter=~.*@resources", text, re.M)
        assert not re.search(r"^ProcSubset=pid", text, re.M)


def test_each_role_target_pulls_in_its_units() -> None:
    desktop = read_unit(REPO / "units/appliance-desktop.target")["Unit"]["Wants"].split()
    compute = read_unit(REPO / "units/appliance-compute.target")["Unit"]["Wants"].split()

    assert {"appliance-gateway.service", "appliance-inference.service"} <= set(desktop)
    assert {"appliance-migrate.service", "appliance-persister.service"} <= set(compute)
    persister = read_unit(REPO / "units/appliance-persister.service")["Unit"]
    assert "appliance-migrate.service" in persister["After"].split()
    assert "appliance-migrate.service" in persister["Requires"].split()
