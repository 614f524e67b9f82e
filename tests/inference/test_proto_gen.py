"""The committed generated code matches proto/inference.proto."""

from __future__ import annotations

import pytest

from appliance.devtools import protogen


def test_generated_code_matches_the_proto() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) regenerates the code")
    assert protogen.differences() == [], "run: python -m appliance.devtools.protogen"
