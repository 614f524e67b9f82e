"""The shared request-body bounds (appliance/wire/bounds.py), with plain values."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from appliance.wire.bounds import MAX_DEPTH, check_count, check_depth, check_text, has_nul
from appliance.wire.errors import WireError


def nested(levels: int, kind: str = "list") -> Any:
    """`levels` arrays (or objects) one inside the other, the outermost included."""
    value: Any = 0
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "object"])
def test_depth_up_to_the_limit_passes_and_one_more_is_refused(kind: str) -> None:
    check_depth(nested(MAX_DEPTH, kind))
    with pytest.raises(WireError, match=f"more than {MAX_DEPTH} levels"):
        check_depth(nested(MAX_DEPTH + 1, kind))


def test_the_limit_is_far_below_what_orjson_can_write_again() -> None:
    orjson.dumps({"a": {"b": [nested(MAX_DEPTH)]}})  # an upstream body wraps a few levels more
    with pytest.raises(TypeError):
        orjson.dumps(nested(255))  # what a 256-deep chat body used to reach upstream with: a 502


def test_a_deep_value_is_named_by_its_top_level_field() -> None:
    with pytest.raises(WireError) as err:
        check_depth({"model": "m", "messages": [{"role": "user", "content": "x"}], "format": nested(100)})
    assert err.value.param == "format"
    with pytest.raises(WireError) as err:
        check_depth(nested(100), 16, "documents[0].metadata")
    assert err.value.param == "documents[0].metadata"


def test_scalars_and_wide_values_pass() -> None:
    for value in (None, 3, "text", [], {}, {"messages": [{"role": "user", "content": "x"}] * 1000}):
        check_depth(value)


def test_count() -> None:
    check_count([1] * 3, 3, "messages")
    with pytest.raises(WireError) as err:
        check_count([1] * 4, 3, "messages")
    assert err.value.param == "messages" and "at most 3" in err.value.message


def test_nul_anywhere_in_a_value_keys_included() -> None:
    assert not has_nul({"a": ["b", {"c": 1.5, "d": None}]})
    assert has_nul({"a": ["b", {"c": "x\x00y"}]})
    assert has_nul({"a": [{"k\x00": 1}]})
    assert check_text("fine", "id") == "fine"
    with pytest.raises(WireError) as err:
        check_text("a\x00b", "documents[0].id")
    assert err.value.param == "documents[0].id"
