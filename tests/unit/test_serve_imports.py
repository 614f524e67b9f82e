"""`serve` must set PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported (it picks its
value class at import): with several workers, /metrics would otherwise answer empty."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_server_does_not_import_prometheus_client() -> None:
    code = "import sys, appliance.server, appliance.up; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
