"""A pooled PostgreSQL connection behind a breaker: how every store meets an outage.

Once PostgreSQL has failed, the breaker refuses at once for a cool-down (growing while it
stays down) instead of every caller waiting out the pool's timeout; one probe at a time finds
out when it is back. An answer of any kind from the server, an error included, closes it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool

from appliance.domain.breaker import Breaker, State
from appliance.domain.errors import DependencyUnavailable, InvalidRequest

log = logging.getLogger(__name__)


@asynccontextmanager
async def guarded_connection(pool: psycopg_pool.AsyncConnectionPool, breaker: Breaker, *,
                             missing: str | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of `pool`: DependencyUnavailable when PostgreSQL is down (or, with `missing`,
    its message when a table is not there: not migrated), InvalidRequest when it refuses a value."""
    if not breaker.allow():
        raise DependencyUnavailable(f"PostgreSQL is unavailable (next try in {breaker.retry_in():.0f} s)")
    try:
        if breaker.state is State.HALF_OPEN:
            # A probe: the outage left its broken connections idle in the pool, and a probe on
            # one of them fails however well PostgreSQL is now (each such failure doubled the
            # cool-down: 21 s to notice a restart that took 2). Drop them first.
            await pool.check()
        async with pool.connection() as conn:
            yield conn
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError) as exc:
        breaker.failure()
        raise DependencyUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc
    except psycopg.errors.UndefinedTable as exc:
        breaker.success()
        if missing is None:
            raise
        raise DependencyUnavailable(missing) from exc
    except psycopg.DataError as exc:
        breaker.success()
        log.warning("PostgreSQL refused the data", extra={"error": type(exc).__name__})
        raise InvalidRequest(f"PostgreSQL refused a value of the request: {str(exc).splitlines()[0]}") from exc
    except psycopg.Error:
        breaker.success()  # it answered
        raise
    except BaseException:
        breaker.abandon()
        raise
    else:
        breaker.success()
