"""The Quadlet checker: Podman's generator cannot run here (no Podman >= 4.4), so this checks
what it would: every file parses, every key is one Quadlet knows for its section, every file
a Quadlet mounts is shipped (and installed for that role), every ${VAR} is in the env file,
and the sections Quadlet copies into the generated service pass `systemd-analyze verify`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import REPO, ROLE_FILES, expected_tree, need, run_install

QUADLETS = sorted((REPO / "quadlet").iterdir())
CONTAINERS = [q for q in QUADLETS if q.suffix == ".container"]

# Keys of podman-systemd.unit(5) as of Podman 4.4, the first release with Quadlet and the
# floor these files target. Later keys (PodmanArgs, ShmSize, Tmpfs, Secret, ...) are left
# out on purpose, so using one fails here instead of on an operator's 4.4 host.
CONTAINER_KEYS_4_4 = {
    "AddCapability", "AddDevice", "Annotation", "ContainerName", "DropCapability",
    "Environment", "EnvironmentFile", "EnvironmentHost", "Exec", "ExposeHostPort", "Group",
    "HealthCmd", "HealthInterval", "HealthOnFailure", "HealthRetries", "HealthStartPeriod",
    "HealthStartupCmd", "HealthStartupInterval", "HealthStartupRetries", "HealthStartupSuccess",
    "HealthStartupTimeout", "HealthTimeout", "Image", "IP", "IP6", "Label", "LogDriver", "Mount",
    "Network", "NoNewPrivileges", "Notify", "PublishPort", "ReadOnly", "RemapGid", "RemapUid",
    "RemapUidSize", "RemapUsers", "RunInit", "SeccompProfile", "SecurityLabelDisable",
    "SecurityLabelFileType", "SecurityLabelLevel", "SecurityLabelType", "Timezone", "User",
    "UserNS", "VolatileTmp", "Volume",
}
VOLUME_KEYS_4_4 = {"Label", "User", "Group"}
NETWORK_KEYS_4_4 = {"Label", "DisableDNS", "Driver", "Gateway", "Internal", "IPAMDriver", "IPRange",
                    "IPv6", "Options", "Subnet"}
SECTIONS = {
    ".container": {"Unit", "Container", "Service", "Install"},
    ".volume": {"Unit", "Volume", "Install"},
    ".network": {"Unit", "Network", "Install"},
}
OWN_KEYS = {"Container": CONTAINER_KEYS_4_4, "Volume": VOLUME_KEYS_4_4, "Network": NETWORK_KEYS_4_4}
ENV_FILE = REPO / "packaging/env/appliance.env"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as in systemd unit files."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{lineno}: bad section header"
            section = line[1:-1]
            continue
        assert "=" in line and section, f"{path.name}:{lineno}: not KEY=VALUE inside a section"
        key, value = line.split("=", 1)
        assert key.strip() == key and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key), f"{path.name}:{lineno}: key {key!r}"
        entries.append((section, key, value.strip()))
    return entries


def values(entries: list[tuple[str, str, str]], section: str, key: str) -> list[str]:
    return [v for s, k, v in entries if s == section and k == key]


def uncommented(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith(("#", ";")))


def env_names() -> set[str]:
    return {line.split("=", 1)[0] for line in ENV_FILE.read_text().splitlines()
            if line and not line.startswith("#") and "=" in line}


def role_of(path: Path) -> str:
    wanted = values(parse(path), "Install", "WantedBy")
    assert len(wanted) == 1, f"{path.name}: one WantedBy= role target"
    match = re.fullmatch(r"appliance-(desktop|compute|storage)\.target", wanted[0])
    assert match, f"{path.name}: WantedBy={wanted[0]}"
    return match.group(1)


@pytest.mark.parametrize("path", QUADLETS, ids=lambda p: p.name)
def test_parses_with_known_sections_and_keys(path: Path) -> None:
    entries = parse(path)

    assert path.suffix in SECTIONS
    for section, key, _ in entries:
        assert section in SECTIONS[path.suffix], f"{path.name}: section [{section}]"
        if section in OWN_KEYS:
            assert key in OWN_KEYS[section], f"{path.name}: [{section}] {key}= is not a Podman 4.4 Quadlet key"
    own = {".container": "Container", ".volume": "Volume", ".network": "Network"}[path.suffix]
    assert any(s == own for s, _, _ in entries), f"{path.name}: no [{own}] section"


@pytest.mark.parametrize("path", CONTAINERS, ids=lambda p: p.name)
def test_container_has_image_health_restart_and_role(path: Path) -> None:
    entries = parse(path)

    image = values(entries, "Container", "Image")
    assert len(image) == 1 and re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[a-z0-9._/-]+:[A-Za-z0-9._-]+", image[0]), image
    assert values(entries, "Container", "HealthCmd"), "HealthCmd="
    assert values(entries, "Service", "Restart") in (["on-failure"], ["always"])
    role = role_of(path)
    assert (REPO / "units" / f"appliance-{role}.target").is_file()
    assert f"appliance-{role}.target" in values(entries, "Unit", "PartOf")
    assert values(entries, "Container", "ContainerName") == [path.stem]


@pytest.mark.parametrize("path", CONTAINERS, ids=lambda p: p.name)
def test_everything_it_mounts_is_shipped_and_installed_for_its_role(path: Path) -> None:
    entries = parse(path)
    installed = expected_tree(role_of(path))
    rendered = {"/run/appliance-prometheus/prometheus.yml": "/etc/appliance/prometheus/prometheus.yml"}

    for volume in values(entries, "Container", "Volume"):
        source = volume.split(":", 1)[0]
        if source.endswith(".volume"):
            assert (REPO / "quadlet" / source).is_file(), source
            assert f"/etc/containers/systemd/{source}" in installed, source
        elif source.startswith("/etc/appliance/"):
            shipped = REPO / "packaging/config" / source.removeprefix("/etc/appliance/")
            assert shipped.exists(), f"{path.name}: {source} is not in packaging/config"
            assert source in installed, f"{path.name}: install.sh does not install {source} for this role"
        elif source.startswith("/etc/credstore/"):
            assert source in installed, f"{path.name}: install.sh does not create {source} for this role"
        elif source in rendered:
            pre = " ".join(values(entries, "Service", "ExecStartPre"))
            assert rendered[source] in pre and source in pre
            assert rendered[source] in installed
        else:
            raise AssertionError(f"{path.name}: mounts {source}, which nothing ships")
    for env_file in values(entries, "Container", "EnvironmentFile") + values(entries, "Service", "EnvironmentFile"):
        assert env_file == "/etc/appliance/appliance.env"


def test_every_variable_is_in_the_env_file() -> None:
    names = env_names()
    templates = [*QUADLETS, *(p for p in (REPO / "packaging/config").rglob("*") if p.is_file())]
    used = {(t.name, m) for t in templates for m in VAR.findall(uncommented(t))}
    # NATS reads $NAME (no braces) from its environment.
    used |= {("nats.conf", m) for m in re.findall(r"\$([A-Z_]+)", (REPO / "packaging/config/nats/nats.conf").read_text())}

    missing = sorted((file, name) for file, name in used if name not in names)
    assert not missing, f"not in packaging/env/appliance.env: {missing}"


def test_no_host_name_or_port_is_hard_coded_in_quadlets() -> None:
    for path in QUADLETS:
        text = path.read_text()
        assert "home.arpa" not in text, path.name
        for exec_line in re.findall(r"^(?:Exec|HealthCmd)=.*$", text, re.M):
            assert not re.search(r":\d{4,5}\b|--port \d", exec_line), f"{path.name}: {exec_line}"


def test_passthrough_sections_verify_as_systemd_units(tmp_path: Path, fake_artifact: Path) -> None:
    """Quadlet copies [Unit], [Service] and [Install] into the generated service: verify them."""
    need("systemd-analyze")
    root = tmp_path / "root"
    root.mkdir()
    run_install("--role", "all", "--root", str(root), "--artifact", str(fake_artifact))
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    generated = []
    for path in CONTAINERS:
        entries = parse(path)
        lines = []
        for section in ("Unit", "Service", "Install"):
            lines.append(f"[{section}]")
            lines += [f"{k}={v}" for s, k, v in entries if s == section]
            if section == "Service":
                lines.append("ExecStart=/opt/appliance/bin/appliance")
        unit = root / "etc/systemd/system" / f"{path.stem}.service"
        unit.write_text("\n".join(lines) + "\n")
        generated.append(str(unit))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *generated],
                          capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr


def test_each_role_gets_its_containers() -> None:
    by_role: dict[str, set[str]] = {"desktop": set(), "compute": set(), "storage": set()}
    for path in CONTAINERS:
        by_role[role_of(path)].add(path.stem.removeprefix("appliance-"))

    assert by_role == {"desktop": {"nats"}, "compute": {"postgres", "vllm", "llamacpp"},
                       "storage": {"prometheus", "grafana", "loki", "tempo", "vector", "minio"}}
    for role, names in by_role.items():
        for name in names:
            assert f"/etc/containers/systemd/appliance-{name}.container" in ROLE_FILES[role]


def test_config_files_parse() -> None:
    config = REPO / "packaging/config"
    for path in config.rglob("*.y*ml"):
        assert yaml.safe_load(path.read_text()), path
    prometheus = yaml.safe_load((config / "prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert {"appliance-gateway", "appliance-inference", "vector"} <= jobs
    vector = yaml.safe_load((config / "vector/vector.yaml").read_text())
    assert vector["sources"]["telemetry"]["subject"] == "telemetry.>"
    assert vector["sinks"]["prometheus"]["address"].endswith(":${VECTOR_EXPORTER_PORT}")
    assert vector["sinks"]["loki"]["type"] == "loki"
    # The fields Vector turns into metrics are the ones the gateway's telemetry events carry.
    events_source = (REPO / "appliance/domain/events.py").read_text()
    for metric in vector["transforms"]["telemetry_metrics"]["metrics"]:
        if metric["field"] != "subject":
            assert f'"{metric["field"]}"' in events_source, metric["field"]
    assert "jetstream" in (config / "nats/nats.conf").read_text()


def test_grafana_dashboard_covers_the_gateway_metrics() -> None:
    dashboard = json.loads((REPO / "packaging/config/grafana/dashboards/appliance-gateway.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])

    for metric in ("appliance_http_requests_total", "appliance_http_request_duration_seconds_bucket",
                   "appliance_tokens_total", "appliance_cost_usd_total", "appliance_events_published_total",
                   "appliance_events_spooled_total", "appliance_events_dropped_total", "appliance_events_spool_bytes",
                   "gen_ai_client_operation_duration_seconds_count", "gen_ai_client_token_usage_sum",
                   "appliance_key_cost_usd_total", "gen_ai_server_time_to_first_token_seconds_bucket"):
        assert metric in exprs, metric
    uids = {t["datasource"]["uid"] for panel in dashboard["panels"] for t in panel["targets"]}
    datasources = yaml.safe_load((REPO / "packaging/config/grafana/provisioning/datasources/appliance.yaml").read_text())
    assert uids <= {d["uid"] for d in datasources["datasources"]}
    tempo = next(d for d in datasources["datasources"] if d["type"] == "tempo")
    assert tempo["url"] == "http://${STORAGE_HOST}:${TEMPO_PORT}"
    assert tempo["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "appliance-loki"


def test_gateway_metric_names_match_the_code() -> None:
    """The dashboard's names are the ones the gateway registers (where the code has them yet)."""
    source = "".join(p.read_text() for p in (REPO / "appliance").rglob("*.py"))
    for metric in ("appliance_http_requests_total", "appliance_http_request_duration_seconds",
                   "appliance_tokens_total", "appliance_cost_usd_total", "gen_ai_client_token_usage",
                   "gen_ai_client_operation_duration_seconds", "gen_ai_server_time_to_first_token_seconds",
                   "appliance_key_cost_usd_total"):
        assert f'"{metric}"' in source, metric


def test_prometheus_config_renders_from_the_shipped_env_file(tmp_path: Path) -> None:
    """What ExecStartPre= does at start: every target gets a host and a port from appliance.env."""
    env = {"PATH": "/usr/bin:/bin"}
    for line in ENV_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    out = tmp_path / "prometheus.yml"

    subprocess.run([str(REPO / "packaging/render-config"), str(REPO / "packaging/config/prometheus/prometheus.yml"),
                    str(out)], check=True, env=env)

    rendered = yaml.safe_load(out.read_text())
    targets = [t for job in rendered["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "desktop.home.arpa:8080" in targets and "compute.home.arpa:9102" in targets
    for target in targets:
        assert re.fullmatch(r"[a-z0-9.-]+:\d+", target), target
