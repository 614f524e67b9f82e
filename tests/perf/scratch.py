"""Where the benches write: a fresh directory under the system temp dir, never the working tree.

A bench run once left its nginx config and payloads in the repository (`tmpflgcmtc9/`, a
work dir made with `tempfile.mkdtemp(dir=".")` and handed to `start_nginx`), and it was
committed. The helpers that write into a work dir they are given check it with `outside_tree`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from tests.procs import ROOT


def scratch_dir(prefix: str) -> Path:
    """A new directory under the system temp dir for one run, removed when the bench exits."""
    work = outside_tree(Path(tempfile.mkdtemp(prefix=prefix)))
    atexit.register(shutil.rmtree, work, True)
    return work


def outside_tree(work: Path) -> Path:
    """`work` made absolute; ValueError when it is inside the working tree."""
    work = work.resolve()
    if work == ROOT or ROOT in work.parents:
        raise ValueError(f"benches write under a temp dir, not into the working tree: {work}")
    return work
