"""The Codex CLI (npm `@openai/codex`), unchanged, against the gateway's `/v1/responses`: a
custom model provider with `wire_api = "responses"` pointed at the gateway in front of the
fake LLM, and one tool round trip (the fake model calls Codex's shell tool, Codex runs it and
sends the output back, the model answers).

The binary: `$APPLIANCE_TEST_CODEX`, else `codex` on PATH, else where .ci/run installs it
(`npm install --prefix /opt/codex-cli @openai/codex@<pinned>`). Without it the test skips,
unless `APPLIANCE_TEST_REQUIRE_CODEX=1` (set by .ci/run), where its absence fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FakeLLM, Gateway

CI_INSTALL = Path("/opt/codex-cli/node_modules/.bin/codex")


def codex_binary() -> str | None:
    explicit = os.environ.get("APPLIANCE_TEST_CODEX")
    if explicit:
        return explicit
    found = shutil.which("codex")
    if found:
        return found
    return str(CI_INSTALL) if CI_INSTALL.exists() else None


REQUIRED = os.environ.get("APPLIANCE_TEST_REQUIRE_CODEX") == "1"
# Decided before any fixture starts a gateway, so a machine without it skips at once.
pytestmark = pytest.mark.skipif(codex_binary() is None and not REQUIRED, reason=(
    "Codex CLI not installed: npm install --prefix /opt/codex-cli @openai/codex (as .ci/run does)"))


def config_toml(gateway: Gateway) -> str:
    # Non-interactive: never ask for approval, no sandbox (CI runs as root in a plain VM), no
    # web search, update check, analytics or feedback (no network but the gateway), no retries.
    return f"""
model = "coder"
model_provider = "appliance"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false
web_search = "disabled"

[analytics]
enabled = false

[feedback]
enabled = false

[model_providers.appliance]
name = "appliance gateway"
base_url = "{gateway.base_url}"
env_key = "APPLIANCE_CODEX_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""


def test_codex_exec_runs_a_shell_tool_through_the_gateway(stored_gateway: Gateway, llm: FakeLLM,
                                                         tmp_path: Path) -> None:
    binary = codex_binary()
    assert binary is not None, "the Codex CLI is required here (APPLIANCE_TEST_REQUIRE_CODEX=1) but not installed"
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(config_toml(stored_gateway))
    llm.control(tokens=0, tool_call={"name": "exec_command", "arguments": json.dumps({"cmd": "echo hi-from-codex"})},
                after_tool={"tool_call": None, "reply": "The command printed hi-from-codex"})

    proc = subprocess.run(
        [binary, "exec", "--strict-config", "--json", "--ephemeral", "--color", "never", "--skip-git-repo-check",
         "--sandbox", "danger-full-access", "-o", str(tmp_path / "last.txt"), "run echo hi-from-codex"],
        cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "CODEX_HOME": str(home),
             "APPLIANCE_CODEX_KEY": "unused", "NO_COLOR": "1"})

    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ran = [e["item"] for e in events if e.get("type") == "item.completed"
           and e["item"].get("type") == "command_execution"]
    assert ran and ran[0]["exit_code"] == 0 and "hi-from-codex" in ran[0]["aggregated_output"]
    assert (tmp_path / "last.txt").read_text().strip() == "The command printed hi-from-codex"
    # Codex called twice: the tool call, then with the command's output as a `tool` message.
    first, second = llm.requests()[-2:]
    assert any(t["function"]["name"] == "exec_command" for t in first["tools"]) and first["stream"] is True
    assert second["messages"][-1]["role"] == "tool" and "hi-from-codex" in second["messages"][-1]["content"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "exec_command"
