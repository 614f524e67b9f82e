"""Regenerate `appliance/inference/gen/` from `proto/inference.proto` (needs grpcio-tools).

    python -m appliance.devtools.protogen            # rewrite the committed files
    python -m appliance.devtools.protogen --check    # exit 1 if they differ from the .proto

The generated code is committed so that installing the package needs no code generator;
`tests/inference/test_proto_gen.py` runs the check, so an edited .proto without
regenerated code fails the suite.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PROTO_DIR: Final = ROOT / "proto"
GEN_DIR: Final = ROOT / "appliance" / "inference" / "gen"
PROTO: Final = "inference.proto"
GEN_PACKAGE: Final = "appliance.inference.gen"
# Lines that name the generator's version: they may differ between machines without the
# code meaning anything different, so the check ignores them.
_VERSION_LINE: Final = re.compile(r"(Protobuf Python Version|GRPC_GENERATED_VERSION =|_runtime_version\.|^\s+\d+,\s*$|^\s+'',\s*$)")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc into `out_dir`; returns the files written."""
    from grpc_tools import protoc  # a build tool, not a runtime dependency

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", str(PROTO_DIR / PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    grpc_file = out_dir / "inference_pb2_grpc.py"
    text = grpc_file.read_text(encoding="utf-8")
    grpc_file.write_text(text.replace("import inference_pb2 as", f"from {GEN_PACKAGE} import inference_pb2 as"),
                         encoding="utf-8")
    init = out_dir / "__init__.py"
    init.write_text('"""Generated from proto/inference.proto by `python -m appliance.devtools.protogen`;'
                    ' do not edit."""\n', encoding="utf-8")
    return sorted(p for p in out_dir.iterdir() if p.suffix in (".py", ".pyi"))


def _meaningful(text: str) -> list[str]:
    return [line for line in text.splitlines() if not _VERSION_LINE.search(line)]


def differences(committed: Path = GEN_DIR) -> list[str]:
    """Names of generated files whose committed copy differs from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        return [p.name for p in fresh
                if not (committed / p.name).is_file()
                or _meaningful((committed / p.name).read_text(encoding="utf-8")) != _meaningful(p.read_text(encoding="utf-8"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences()
        if stale:
            print(f"generated code is stale: {', '.join(stale)}; run python -m appliance.devtools.protogen")
            return 1
        print("generated code matches proto/inference.proto")
        return 0
    for path in generate(GEN_DIR):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
