"""How to start another `appliance` command as a child of this process, from a virtualenv,
a shiv zipapp or a PyInstaller binary alike."""

from __future__ import annotations

import os
import sys


def command(*args: str) -> list[str]:
    """The argv that runs `appliance ARGS...` with this interpreter (or this frozen binary)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "appliance", *args]


def environment(**extra: str) -> dict[str, str]:
    """This process's environment plus its import path: a zipapp's unpacked site-packages
    are on sys.path but not on the child interpreter's default one."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **extra}
