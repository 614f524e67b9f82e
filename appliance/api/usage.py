"""GET /admin/usage: totals per key, model, backend or day, from PostgreSQL (docs/usage.md).

`?group_by=key|model|backend|day` (or several, comma-separated), `since=` and `until=`
(ISO 8601, or a time ago: `24h`, `7d`). Answers `{"data": [rows]}`; a row names the columns
it was grouped by and leaves the others null. Admin keys only.
"""

from __future__ import annotations

import falcon
import falcon.asgi

from appliance.api.access import require_admin
from appliance.domain.errors import DependencyUnavailable
from appliance.domain.usage import UsageReader, parse_query


class UsageResource:
    def __init__(self, reader: UsageReader | None) -> None:
        self._reader = reader

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        require_admin(req)
        query = parse_query(req.get_param("group_by"), req.get_param("since"), req.get_param("until"))
        if self._reader is None:
            raise DependencyUnavailable("usage needs PostgreSQL: set APPLIANCE_DATABASE_URL")
        rows = await self._reader.usage(query)
        resp.media = {"data": [row.as_json() for row in rows]}
