"""JSON schema checks: a tool call's arguments, a strict `response_format` answer.

`jsonschema` is a pure validator (no I/O: remote `$ref`s are not retrieved, so a schema
that points elsewhere fails closed as unresolvable). Compiled validators are kept per
schema text, bounded; a schema that is itself invalid checks nothing (the backend accepted
the request, so the gateway does not refuse it after the fact), nor does one that fails while
checking (a bad regex); both are logged.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import referencing.exceptions

log = logging.getLogger(__name__)
_CACHE_MAX: Final = 256
_MESSAGE_MAX: Final = 200
_cache: OrderedDict[str, Any] = OrderedDict()


def _validator(schema: Mapping[str, Any]) -> Any:
    key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    found = _cache.get(key)
    if found is not None:
        _cache.move_to_end(key)
        return found
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
        validator: Any = cls(schema)
    except jsonschema.exceptions.SchemaError as exc:
        log.info("a request's JSON schema is invalid; answers are not checked against it",
                 extra={"error": exc.message[:_MESSAGE_MAX]})
        validator = False
    _cache[key] = validator
    if len(_cache) > _CACHE_MAX:
        _cache.popitem(last=False)
    return validator


def schema_problem(value: Any, schema: Mapping[str, Any] | None) -> str | None:
    """Why `value` does not match `schema` (one short line), or None when it does."""
    if not schema:
        return None
    validator = _validator(schema)
    if validator is False:
        return None
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:  # a $ref elsewhere, or to nowhere
        return f"schema could not be applied: {str(exc)[:_MESSAGE_MAX]}"
    except Exception as exc:  # a schema check_schema let through that cannot run (a bad regex, say)
        log.info("a request's JSON schema could not be applied; not checked", extra={"error": repr(exc)[:_MESSAGE_MAX]})
        return None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where or '(root)'}: {' '.join(error.message.split())[:_MESSAGE_MAX]}"
