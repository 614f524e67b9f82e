"""The exact version pyproject.toml pins a dependency to, for the tests that check a
library's private surface we use (appliance/events/nats_private.py, appliance/signals.py)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from tests.procs import ROOT


def check_pin(distribution: str, adapter: str) -> str:
    """The installed version of `distribution`, asserted to be the one pyproject.toml pins
    exactly: the tests of `adapter` are what vouch for that version."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in dependencies if (m := re.fullmatch(rf"{re.escape(distribution)}==([\w.]+)", d))]
    assert pins, f"pyproject.toml must pin {distribution} exactly (==): {adapter} uses its private surface"
    installed = version(distribution)
    assert installed == pins[0], (f"{distribution} {installed} is installed but pyproject.toml pins {pins[0]}: "
                                  f"these tests vouch for the installed one; check {adapter} against it, then move the pin")
    return installed
