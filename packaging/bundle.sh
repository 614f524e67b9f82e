#!/usr/bin/env bash
# Make the release bundle an operator copies to each host: one tarball with install.sh, the
# units, the Quadlets, the config templates and the artifact.
#
#   packaging/bundle.sh [--artifact FILE] [--out DIR]
#
# On the host:  tar xzf appliance-VERSION.tar.gz && cd appliance-VERSION && ./install.sh --role ROLE
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
artifact="$here/dist/appliance"
out="$here/dist"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --artifact) artifact=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: packaging/bundle.sh [--artifact FILE] [--out DIR]" >&2; exit 2 ;;
    esac
done
[ -f "$artifact" ] || { echo "bundle.sh: no artifact at $artifact (run packaging/build.sh)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/pyproject.toml" | head -n 1)
name="appliance-$version"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/$name/dist" "$stage/$name/packaging"
cp "$here/install.sh" "$stage/$name/"
cp -r "$here/units" "$here/quadlet" "$stage/$name/"
cp -r "$here/packaging/env" "$here/packaging/config" "$stage/$name/packaging/"
cp "$here/packaging/render-config" "$here/packaging/OPERATORS.md" "$stage/$name/packaging/"
cp "$artifact" "$stage/$name/dist/appliance"
chmod 0755 "$stage/$name/install.sh" "$stage/$name/dist/appliance" "$stage/$name/packaging/render-config"
mkdir -p "$out"
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name -czf "$out/$name.tar.gz.tmp" "$name"
mv "$out/$name.tar.gz.tmp" "$out/$name.tar.gz"
echo "$out/$name.tar.gz"
