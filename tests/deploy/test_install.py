"""install.sh into a temporary root: the exact tree per role, idempotence, edits kept, uninstall."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import INSTALL, expected_tree, need, run_install, snapshot

ROLES = ["desktop", "compute", "storage", "all"]


@pytest.mark.parametrize("role", ROLES)
def test_role_installs_exactly_the_expected_tree(role: str, root: Path, fake_artifact: Path) -> None:
    out = run_install("--role", role, "--root", str(root), "--artifact", str(fake_artifact)).stdout

    assert set(snapshot(root)) == expected_tree(role)
    assert "systemctl start appliance-" in out
    assert (root / "etc/appliance/appliance.env").stat().st_mode & 0o777 == 0o640
    assert (root / "etc/credstore").stat().st_mode & 0o777 == 0o700
    for secret in (root / "etc/credstore").iterdir():
        assert secret.stat().st_mode & 0o777 == 0o600, secret
        assert len(secret.read_text().strip()) >= 8


@pytest.mark.parametrize("role", ROLES)
def test_second_run_changes_nothing(role: str, root: Path, fake_artifact: Path) -> None:
    args = ("--role", role, "--root", str(root), "--artifact", str(fake_artifact))
    run_install(*args)
    before = snapshot(root)

    out = run_install(*args).stdout

    assert snapshot(root) == before
    assert "nothing changed" in out


def test_desktop_next_steps_name_the_target_logs_and_health(root: Path, fake_artifact: Path) -> None:
    out = run_install("--role", "desktop", "--root", str(root), "--artifact", str(fake_artifact)).stdout

    assert "systemctl start appliance-desktop.target" in out
    assert "journalctl -u appliance-gateway -f" in out
    assert "curl localhost:8080/healthz" in out


def test_edited_config_survives_a_reinstall(root: Path, fake_artifact: Path) -> None:
    args = ("--role", "desktop", "--root", str(root), "--artifact", str(fake_artifact))
    run_install(*args)
    env = root / "etc/appliance/appliance.env"
    edited = env.read_text().replace("DESKTOP_HOST=desktop.home.arpa", "DESKTOP_HOST=10.0.0.5")
    env.write_text(edited)

    out = run_install(*args).stdout

    assert env.read_text() == edited
    assert "keeping your edited /etc/appliance/appliance.env" in out
    shipped = (Path(INSTALL).parent / "packaging/env/appliance.env").read_text()
    assert (root / "etc/appliance/appliance.env.new").read_text() == shipped
    before = snapshot(root)
    run_install(*args)
    assert snapshot(root) == before


def test_upgrade_replaces_programs_and_untouched_configs(root: Path, fake_artifact: Path, tmp_path: Path) -> None:
    args = ("--role", "desktop", "--root", str(root), "--artifact", str(fake_artifact))
    run_install(*args)
    fake_artifact.write_text("#!/bin/sh\necho 'appliance 0.0.1-test'\n")

    run_install(*args)

    assert "0.0.1-test" in (root / "opt/appliance/bin/appliance").read_text()
    assert not (root / "etc/appliance/appliance.env.new").exists()


def test_a_foreign_file_is_never_overwritten(root: Path, fake_artifact: Path) -> None:
    catalog = root / "etc/appliance/catalog.toml"
    catalog.parent.mkdir(parents=True)
    catalog.write_text("# the operator's own catalog\n")

    run_install("--role", "desktop", "--root", str(root), "--artifact", str(fake_artifact))

    assert catalog.read_text() == "# the operator's own catalog\n"
    assert (root / "etc/appliance/catalog.toml.new").is_file()


@pytest.mark.parametrize("role", ROLES)
def test_uninstall_removes_what_it_installed_and_nothing_else(role: str, root: Path, fake_artifact: Path) -> None:
    # Things that were there before, and must still be after.
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/sshd.service").write_text("[Service]\nExecStart=/usr/sbin/sshd\n")
    (root / "opt").mkdir()
    (root / "opt/other").mkdir()
    before = set(snapshot(root))
    run_install("--role", role, "--root", str(root), "--artifact", str(fake_artifact))
    env = root / "etc/appliance/appliance.env"
    env.write_text(env.read_text() + "APPLIANCE_LOG_LEVEL=debug\n")
    secrets = {p for p in snapshot(root) if p.startswith("/etc/credstore/")}

    out = run_install("--uninstall", "--root", str(root)).stdout

    kept = {"/etc/appliance", "/etc/appliance/appliance.env"} | secrets
    if secrets:
        kept.add("/etc/credstore")
    assert set(snapshot(root)) == before | kept
    assert "keeping /etc/appliance/appliance.env" in out


def test_dry_run_prints_every_action_and_changes_nothing(root: Path, fake_artifact: Path) -> None:
    out = run_install("--role", "all", "--root", str(root), "--artifact", str(fake_artifact), "--dry-run").stdout

    assert snapshot(root) == {}
    assert f"install -m 0755 {fake_artifact} {root}/opt/appliance/bin/appliance" in out
    assert "appliance-gateway.service" in out and "appliance-minio.container" in out
    assert "generate /etc/credstore/postgres-password" in out


def test_dry_run_uninstall_changes_nothing(root: Path, fake_artifact: Path) -> None:
    run_install("--role", "desktop", "--root", str(root), "--artifact", str(fake_artifact))
    before = snapshot(root)

    out = run_install("--uninstall", "--root", str(root), "--dry-run").stdout

    assert snapshot(root) == before
    assert "[dry-run] rm -f" in out


def test_bad_arguments_fail_with_a_message(root: Path) -> None:
    for args in (("--role", "laptop"), (), ("--bogus",)):
        proc = run_install(*args, "--root", str(root), check=False)
        assert proc.returncode != 0
        assert "install.sh:" in proc.stderr


def test_missing_artifact_names_the_build_script(root: Path, tmp_path: Path) -> None:
    proc = run_install("--role", "desktop", "--root", str(root), "--artifact", str(tmp_path / "nope"), check=False)

    assert proc.returncode != 0
    assert "packaging/build.sh" in proc.stderr


def test_install_sh_is_shellcheck_and_sh_n_clean() -> None:
    scripts = [str(INSTALL), str(INSTALL.parent / "packaging/render-config"), str(INSTALL.parent / "packaging/build.sh"),
               str(INSTALL.parent / "packaging/bundle.sh")]
    shellcheck = need("shellcheck")
    proc = subprocess.run([shellcheck, "--shell=sh", *scripts[:2]], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout, proc.stdout
    proc = subprocess.run([shellcheck, *scripts[2:]], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout, proc.stdout
    for script in scripts:
        check = subprocess.run(["sh", "-n", script], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stderr, (script, check.stderr)


def test_render_config_fills_variables_from_the_environment(tmp_path: Path) -> None:
    template = tmp_path / "t.yml"
    template.write_text('targets: ["${DESKTOP_HOST}:${GATEWAY_PORT}"]  # $NOT_A_VAR ${UNSET_ONE}\n')
    out = tmp_path / "out.yml"

    subprocess.run([str(INSTALL.parent / "packaging/render-config"), str(template), str(out)], check=True,
                   env={"PATH": "/usr/bin:/bin", "DESKTOP_HOST": "desk.lan", "GATEWAY_PORT": "8080"})

    assert out.read_text() == 'targets: ["desk.lan:8080"]  # $NOT_A_VAR \n'


def test_two_roles_one_after_the_other_then_uninstall(root: Path, fake_artifact: Path) -> None:
    run_install("--role", "desktop", "--root", str(root), "--artifact", str(fake_artifact))
    run_install("--role", "storage", "--root", str(root), "--artifact", str(fake_artifact))

    assert set(snapshot(root)) == expected_tree("desktop") | expected_tree("storage")
    run_install("--uninstall", "--root", str(root))
    left = set(snapshot(root))
    assert left == {"/etc", "/etc/credstore", "/etc/credstore/grafana-admin-password",
                    "/etc/credstore/minio-root-user", "/etc/credstore/minio-root-password"}


def test_release_bundle_installs_on_its_own(root: Path, fake_artifact: Path, tmp_path: Path) -> None:
    """The tarball an operator copies to a host holds everything install.sh needs."""
    out = tmp_path / "out"
    made = subprocess.run([str(INSTALL.parent / "packaging/bundle.sh"), "--artifact", str(fake_artifact),
                           "--out", str(out)], capture_output=True, text=True, check=True)
    tarball = Path(made.stdout.strip())
    extracted = tmp_path / "host"
    extracted.mkdir()
    subprocess.run(["tar", "-C", str(extracted), "-xzf", str(tarball)], check=True)
    (bundle,) = extracted.iterdir()

    proc = subprocess.run(["sh", str(bundle / "install.sh"), "--role", "all", "--root", str(root)],
                          capture_output=True, text=True)

    assert proc.returncode == 0, proc.stderr
    assert set(snapshot(root)) == expected_tree("all")
    assert (root / "opt/appliance/bin/appliance").read_bytes() == fake_artifact.read_bytes()
