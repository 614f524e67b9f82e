#!/bin/sh
# Install appliance on this host in one role (see packaging/OPERATORS.md).
#
#   install.sh --role storage|desktop|compute|all [--dry-run] [--root DIR] [--artifact FILE]
#   install.sh --uninstall [--dry-run] [--root DIR]
#
# Idempotent: a second run changes nothing. Config files under /etc/appliance are written
# once; a file the operator edited is kept and the new version is put beside it as FILE.new.
# Every installed file is recorded with its sha256 in /opt/appliance/.install-manifest, which
# is how --uninstall removes exactly what was installed (and keeps what was edited).
set -eu

SRC=$(cd "$(dirname "$0")" && pwd)
ROLE=""
DRY=0
ROOT=""
UNINSTALL=0
ARTIFACT="$SRC/dist/appliance"
MANIFEST=/opt/appliance/.install-manifest
SERVICE_USER=appliance
CHANGED=0

usage() {
    cat <<EOF
usage: install.sh --role storage|desktop|compute|all [--dry-run] [--root DIR] [--artifact FILE]
       install.sh --uninstall [--dry-run] [--root DIR]

  --role R       what this host runs: desktop (gateway, inference, NATS), compute (PostgreSQL,
                 vLLM, llama.cpp, migrations, persister), storage (Prometheus, Grafana, Loki, Tempo,
                 Vector, MinIO), or all of them
  --dry-run      print every action, change nothing
  --root DIR     install into DIR instead of / (no user, no systemctl)
  --artifact F   the packaged appliance (default: dist/appliance beside this script)
  --uninstall    remove what a previous run installed; edited config, credentials and
                 data are kept
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --role) [ "$#" -ge 2 ] || die "--role needs a value"; ROLE=$2; shift 2 ;;
        --role=*) ROLE=${1#--role=}; shift ;;
        --root) [ "$#" -ge 2 ] || die "--root needs a value"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --artifact) [ "$#" -ge 2 ] || die "--artifact needs a value"; ARTIFACT=$2; shift 2 ;;
        --artifact=*) ARTIFACT=${1#--artifact=}; shift ;;
        --dry-run) DRY=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root $ROOT: no such directory"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" = / ] && ROOT=""
fi

# ---------------------------------------------------------------------------- helpers

say() {
    printf '%s\n' "$*"
}

# Run a command, or only print it under --dry-run.
act() {
    if [ "$DRY" = 1 ]; then
        say "[dry-run] $*"
    else
        "$@"
    fi
}

sha() {
    sha256sum "$1" | cut -d' ' -f1
}

manifest_get() {
    [ -f "$ROOT$MANIFEST" ] || return 0
    awk -v p="$1" '$2 == p { print $1 }' "$ROOT$MANIFEST"
}

manifest_set() {
    [ "$DRY" = 1 ] && return 0
    m="$ROOT$MANIFEST"
    if [ -f "$m" ] && [ "$(manifest_get "$2")" = "$1" ]; then
        return 0
    fi
    touch "$m"
    { awk -v p="$2" '$2 != p' "$m"; printf '%s %s\n' "$1" "$2"; } > "$m.tmp"
    mv "$m.tmp" "$m"
    CHANGED=1
}

# make_dir MODE DIR: create DIR (recorded, so --uninstall removes it when empty).
make_dir() {
    if [ ! -d "$ROOT$2" ]; then
        act install -d -m "$1" "$ROOT$2"
        CHANGED=1
        manifest_set dir "$2"
    fi
}

# put KIND MODE SRC DEST: install one file. KIND "config" keeps an operator's edits.
put() {
    kind=$1 mode=$2 src=$3 dest=$4
    target="$ROOT$dest"
    [ -f "$src" ] || die "missing source file $src"
    new=$(sha "$src")
    if [ -f "$target" ]; then
        cur=$(sha "$target")
        if [ "$cur" = "$new" ]; then
            if [ "$(stat -c %a "$target")" != "${mode#0}" ]; then
                act chmod "$mode" "$target"
                CHANGED=1
            fi
            if [ -z "$(manifest_get "$dest")" ]; then
                manifest_set "$new" "$dest"
            fi
            return 0
        fi
        if [ "$kind" = config ] && [ "$cur" != "$(manifest_get "$dest")" ]; then
            say "keeping your edited $dest; the shipped version is $dest.new"
            put file "$mode" "$src" "$dest.new"
            return 0
        fi
    fi
    act install -m "$mode" "$src" "$target"
    CHANGED=1
    manifest_set "$new" "$dest"
}

# secret NAME [CONTENT]: create /etc/credstore/NAME (0600) when absent; never replaced,
# never removed by --uninstall (data depends on it).
secret() {
    target="$ROOT/etc/credstore/$1"
    [ -e "$target" ] && return 0
    if [ "$DRY" = 1 ]; then
        say "[dry-run] generate /etc/credstore/$1 (mode 0600)"
        return 0
    fi
    value=${2:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
    (umask 077 && printf '%s\n' "$value" > "$target")
    say "generated /etc/credstore/$1"
    CHANGED=1
}

systemctl_do() {
    if [ -n "$ROOT" ]; then
        say "skipped under --root: systemctl $*"
    else
        act systemctl "$@"
    fi
}

# ---------------------------------------------------------------------------- uninstall

uninstall() {
    m="$ROOT$MANIFEST"
    [ -f "$m" ] || die "nothing to uninstall: no $MANIFEST"
    for t in appliance-desktop.target appliance-compute.target appliance-storage.target; do
        if grep -q " /etc/systemd/system/$t\$" "$m"; then
            systemctl_do disable --now "$t"
        fi
    done
    # Files first (an edited config stays), then directories deepest first, when empty.
    dirs=$(awk '$1 == "dir" { print $2 }' "$m" | sort -r)
    awk '$1 != "dir" { print $1, $2 }' "$m" | while read -r hash path; do
        target="$ROOT$path"
        [ -f "$target" ] || continue
        if [ "$(sha "$target")" = "$hash" ]; then
            act rm -f "$target"
        else
            say "keeping $path: changed since it was installed"
        fi
    done
    act rm -f "$m"
    for path in $dirs; do
        if [ -d "$ROOT$path" ]; then
            act rmdir "$ROOT$path" 2>/dev/null || say "keeping $path: not empty"
        fi
    done
    systemctl_do daemon-reload
    say "uninstalled. Kept: credentials in /etc/credstore, data in /var/lib/appliance and the"
    say "Podman volumes, and the '$SERVICE_USER' user (userdel $SERVICE_USER to remove it)."
}

# ---------------------------------------------------------------------------- install

install_common() {
    if [ -z "$ROOT" ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
        act useradd --system --user-group --home-dir /var/lib/appliance --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
        CHANGED=1
    fi
    # The manifest lives in /opt/appliance: create both before recording either.
    created=""
    for d in /opt /opt/appliance; do
        if [ ! -d "$ROOT$d" ]; then
            act install -d -m 0755 "$ROOT$d"
            created="$created $d"
        fi
    done
    for d in $created; do
        manifest_set dir "$d"
    done
    make_dir 0755 /etc
    make_dir 0750 /etc/appliance
    make_dir 0700 /etc/credstore
    make_dir 0755 /etc/systemd
    make_dir 0755 /etc/systemd/system
    put file 0644 "$SRC/packaging/OPERATORS.md" /opt/appliance/OPERATORS.md
    put config 0640 "$SRC/packaging/env/appliance.env" /etc/appliance/appliance.env
    if [ -z "$ROOT" ] && [ "$DRY" = 0 ]; then
        chgrp "$SERVICE_USER" "$ROOT/etc/appliance" "$ROOT/etc/appliance/appliance.env"
    fi
}

install_app() {
    [ -f "$ARTIFACT" ] || die "no artifact at $ARTIFACT: run packaging/build.sh or pass --artifact"
    make_dir 0755 /opt/appliance/bin
    put file 0755 "$ARTIFACT" /opt/appliance/bin/appliance
    # Every appliance process loads the catalog named by APPLIANCE_CONFIG in appliance.env.
    put config 0640 "$SRC/packaging/config/catalog.toml" /etc/appliance/catalog.toml
    if [ -z "$ROOT" ] && [ "$DRY" = 0 ]; then
        chgrp "$SERVICE_USER" "$ROOT/etc/appliance/catalog.toml"
    fi
}

install_quadlets() {
    make_dir 0755 /etc/containers
    make_dir 0755 /etc/containers/systemd
    for q in "$@"; do
        put file 0644 "$SRC/quadlet/$q" "/etc/containers/systemd/$q"
    done
}

install_configs() {
    for c in "$@"; do
        put config 0644 "$SRC/packaging/config/$c" "/etc/appliance/$c"
    done
}

# Directories under /etc/appliance, parents first.
config_dirs() {
    for d in "$@"; do
        make_dir 0755 "/etc/appliance/$d"
    done
}

install_units() {
    for u in "$@"; do
        put file 0644 "$SRC/units/$u" "/etc/systemd/system/$u"
    done
}

role_desktop() {
    install_app
    install_units appliance-gateway.service appliance-inference.service appliance-desktop.target
    install_quadlets appliance-nats.container appliance-nats.volume
    config_dirs nats
    install_configs nats/nats.conf
}

role_compute() {
    install_app
    install_units appliance-migrate.service appliance-persister.service appliance-compute.target
    install_quadlets appliance-postgres.container appliance-postgres.volume \
        appliance-vllm.container appliance-llamacpp.container appliance-models.volume
    config_dirs postgres
    install_configs postgres/postgresql.conf
    secret postgres-password
    if [ "$DRY" = 0 ]; then
        secret pgpass "*:*:*:appliance:$(cat "$ROOT/etc/credstore/postgres-password")"
    else
        secret pgpass
    fi
    secret vllm-api-key
}

role_storage() {
    make_dir 0755 /opt/appliance/libexec
    put file 0755 "$SRC/packaging/render-config" /opt/appliance/libexec/render-config
    install_units appliance-storage.target
    install_quadlets appliance-prometheus.container appliance-prometheus.volume \
        appliance-grafana.container appliance-grafana.volume \
        appliance-loki.container appliance-loki.volume \
        appliance-tempo.container appliance-tempo.volume \
        appliance-vector.container \
        appliance-minio.container appliance-minio.volume
    config_dirs prometheus grafana grafana/provisioning grafana/provisioning/datasources \
        grafana/provisioning/dashboards grafana/dashboards loki tempo vector
    install_configs prometheus/prometheus.yml \
        grafana/provisioning/datasources/appliance.yaml \
        grafana/provisioning/dashboards/appliance.yaml \
        grafana/dashboards/appliance-gateway.json \
        loki/loki.yaml tempo/tempo.yaml vector/vector.yaml
    secret grafana-admin-password
    secret minio-root-user appliance
    secret minio-root-password
}

next_steps() {
    say ""
    say "Next steps:"
    say "  1. edit /etc/appliance/appliance.env (host names, ports) and, on desktop, /etc/appliance/catalog.toml"
    say "  2. put API keys in /etc/credstore/ (root, mode 0600), e.g. /etc/credstore/openai-api-key"
    case " $TARGETS " in
        *" desktop "*)
            say "  3. create the gateway's first key (it refuses to serve the network without one):"
            say "     /opt/appliance/bin/appliance keys create admin --admin   (or APPLIANCE_ALLOW_NO_KEYS=true in appliance.env)" ;;
    esac
    for r in $TARGETS; do
        say "  systemctl start appliance-$r.target"
    done
    case " $TARGETS " in
        *" desktop "*)
            say "  journalctl -u appliance-gateway -f"
            say "  curl localhost:8080/healthz" ;;
    esac
    case " $TARGETS " in
        *" compute "*) say "  journalctl -u appliance-persister -u appliance-migrate -f" ;;
    esac
    case " $TARGETS " in
        *" storage "*) say "  podman ps; open http://localhost:3000 (Grafana, admin / /etc/credstore/grafana-admin-password)" ;;
    esac
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi

case "$ROLE" in
    desktop|compute|storage) TARGETS=$ROLE ;;
    all) TARGETS="desktop compute storage" ;;
    "") usage >&2; die "--role is required" ;;
    *) die "unknown role '$ROLE' (storage, desktop, compute or all)" ;;
esac

install_common
for r in $TARGETS; do
    "role_$r"
done
if [ "$CHANGED" = 1 ]; then
    systemctl_do daemon-reload
fi
for r in $TARGETS; do
    systemctl_do enable "appliance-$r.target"
done
if [ "$CHANGED" = 0 ]; then
    say "appliance ($ROLE): already installed, nothing changed"
else
    say "appliance ($ROLE): installed"
fi
next_steps
