"""Stored Responses: what `previous_response_id` continues, and what GET / DELETE /
input_items read. The store is optional: without one (no database configured) a response is
created but not kept, a continuation is refused with a 400 naming the setting, and nothing
is found. A response is its creator's (`owner`: the API key's name, "" without keys): for
any other caller it is not there, the same 404 / 400 as an unknown id. A store that is down fails only these calls (`DependencyUnavailable`, 503); a
create then answers anyway, with a warning that it was not stored."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from appliance.domain.errors import DependencyUnavailable, InvalidRequest, NotFound
from appliance.domain.ports import ResponseStore, StoredResponse

log = logging.getLogger(__name__)

NOT_CONFIGURED: Final = "no database is configured (APPLIANCE_DATABASE_URL), so responses are not stored"


@dataclass(frozen=True, slots=True)
class ItemPage:
    items: list[Mapping[str, Any]]
    has_more: bool


class ResponseArchive:
    """The stored-responses side of `/v1/responses`, over a `ResponseStore` (or none).

    `max_chain` bounds how many responses one continuation reads back; a longer conversation
    is refused with a 400 rather than cut silently.
    """

    def __init__(self, store: ResponseStore | None, *, max_chain: int = 1000) -> None:
        self._store = store
        self._max_chain = max_chain

    @property
    def configured(self) -> bool:
        return self._store is not None

    async def history(self, previous_id: str | None, *, owner: str) -> list[Mapping[str, Any]]:
        """The items `owner`'s continuation of `previous_id` starts from: every earlier
        response's input items and output, oldest first. [] without a previous id."""
        if previous_id is None:
            return []
        if self._store is None:
            raise InvalidRequest(f"previous_response_id cannot be used: {NOT_CONFIGURED}",
                                 param="previous_response_id", code="responses_not_stored")
        chain = await self._store.chain(previous_id, self._max_chain, owner=owner)
        if not chain:
            raise InvalidRequest(f"Previous response with id '{previous_id}' not found.",
                                 param="previous_response_id", code="previous_response_not_found")
        if len(chain) >= self._max_chain and chain[0].previous_response_id is not None:
            raise InvalidRequest(f"The conversation behind '{previous_id}' is longer than {self._max_chain} "
                                 "responses; start a new one with its items as input", param="previous_response_id")
        items: list[Mapping[str, Any]] = []
        for stored in chain:
            items.extend(stored.input_items)
            items.extend(stored.response.get("output") or ())
        return items

    async def keep(self, stored: StoredResponse) -> str | None:
        """Store a response; a warning (for the client) when it could not be, else None."""
        if self._store is None:
            return f"response not stored: {NOT_CONFIGURED}"
        try:
            await self._store.save(stored)
        except (DependencyUnavailable, InvalidRequest) as exc:  # down, or a value PostgreSQL refuses (NUL)
            log.warning("response not stored", extra={"response_id": stored.id, "error": exc.message})
            return f"response not stored ({exc.message})"
        return None

    async def get(self, response_id: str, *, owner: str) -> StoredResponse:
        stored = await self._store.get(response_id, owner=owner) if self._store is not None else None
        if stored is None:
            raise NotFound(self._missing(response_id))
        return stored

    async def delete(self, response_id: str, *, owner: str) -> None:
        if self._store is None or not await self._store.delete(response_id, owner=owner):
            raise NotFound(self._missing(response_id))

    async def input_items(self, response_id: str, *, owner: str, after: str | None, limit: int,
                          order: str) -> ItemPage:
        """A page of `owner`'s response's own input items, in `order` ("asc" or "desc"),
        starting after the item `after` (which must be one of them)."""
        stored = await self.get(response_id, owner=owner)
        items = list(stored.input_items)
        if order == "desc":
            items.reverse()
        start = 0
        if after is not None:
            at = next((i for i, item in enumerate(items) if item.get("id") == after), None)
            if at is None:
                raise InvalidRequest(f"after: no input item '{after}' in response '{response_id}'", param="after")
            start = at + 1
        page = items[start:start + limit]
        return ItemPage(page, start + limit < len(items))

    def _missing(self, response_id: str) -> str:
        if self._store is None:
            return f"No response found with id '{response_id}': {NOT_CONFIGURED}"
        return f"No response found with id '{response_id}'."
