"""The project's own rules, checked in every run: lint, strict types, and the import
contracts that keep the layers (transport -> domain -> ports) and the composition root
free of loops and upward imports (pyproject.toml, `[tool.importlinter]`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy"), "RUFF_CACHE_DIR": str(tmp_path / "ruff")}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def tool(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_import_contracts_hold(tmp_path: Path) -> None:
    result = run([tool("lint-imports"), "--no-cache"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_ruff_is_clean(tmp_path: Path) -> None:
    result = run([tool("ruff"), "check", "appliance", "tests"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.slow
def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "mypy"], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
