"""The stored-responses service over a store that is down, and over none: what degrades."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.domain.errors import DependencyUnavailable, InvalidRequest, NotFound
from appliance.domain.ports import StoredResponse
from appliance.domain.responses import ResponseArchive


class DownStore:
    async def save(self, stored: StoredResponse) -> None:
        raise DependencyUnavailable("PostgreSQL is unavailable: PoolTimeout")

    async def get(self, response_id: str, *, owner: str) -> StoredResponse | None:
        raise DependencyUnavailable("PostgreSQL is unavailable: PoolTimeout")

    async def delete(self, response_id: str, *, owner: str) -> bool:
        raise DependencyUnavailable("PostgreSQL is unavailable: PoolTimeout")

    async def chain(self, response_id: str, limit: int, *, owner: str) -> list[StoredResponse]:
        raise DependencyUnavailable("PostgreSQL is unavailable: PoolTimeout")


class ListStore(DownStore):
    def __init__(self, *stored: StoredResponse) -> None:
        self.rows = {s.id: s for s in stored}

    async def chain(self, response_id: str, limit: int, *, owner: str) -> list[StoredResponse]:
        out: list[StoredResponse] = []
        at: str | None = response_id
        while at in self.rows and self.rows[at].owner == owner and len(out) < limit:
            out.insert(0, self.rows[at])
            at = self.rows[at].previous_response_id
        return out


def stored(rid: str, previous: str | None = None, items: Any = (), output: Any = ()) -> StoredResponse:
    return StoredResponse(rid, "cid", "m", "completed", previous, list(items), {"id": rid, "output": list(output)}, "")


async def test_a_store_that_is_down_fails_only_what_needs_it() -> None:
    archive = ResponseArchive(DownStore())
    assert (await archive.keep(stored("resp_1"))) == "response not stored (PostgreSQL is unavailable: PoolTimeout)"
    assert await archive.history(None, owner="") == []
    for call in (archive.history("resp_1", owner=""), archive.get("resp_1", owner=""),
                 archive.delete("resp_1", owner="")):
        with pytest.raises(DependencyUnavailable):
            await call


async def test_without_a_store_continuations_are_refused_and_nothing_is_found() -> None:
    archive = ResponseArchive(None)
    assert "APPLIANCE_DATABASE_URL" in str(await archive.keep(stored("resp_1")))
    with pytest.raises(InvalidRequest) as refused:
        await archive.history("resp_1", owner="")
    assert refused.value.param == "previous_response_id" and "APPLIANCE_DATABASE_URL" in refused.value.message
    with pytest.raises(NotFound):
        await archive.get("resp_1", owner="")


async def test_history_is_the_chain_oldest_first_and_a_too_long_one_is_refused() -> None:
    store = ListStore(stored("a", None, [{"id": "i1"}], [{"id": "o1"}]), stored("b", "a", [{"id": "i2"}], [{"id": "o2"}]),
                      stored("c", "b", [{"id": "i3"}], [{"id": "o3"}]))
    assert [i["id"] for i in await ResponseArchive(store).history("c", owner="")] == ["i1", "o1", "i2", "o2", "i3", "o3"]
    with pytest.raises(InvalidRequest, match="longer than 2 responses"):
        await ResponseArchive(store, max_chain=2).history("c", owner="")
    with pytest.raises(InvalidRequest) as unknown:
        await ResponseArchive(store).history("zzz", owner="")
    assert unknown.value.code == "previous_response_not_found"
    with pytest.raises(InvalidRequest) as others:
        await ResponseArchive(store).history("c", owner="someone-else")
    assert others.value.code == "previous_response_not_found"
