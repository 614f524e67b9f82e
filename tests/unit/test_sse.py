"""The SSE codec: events split across reads, line endings, comments, multi-line data, and the
bound on what one event may hold."""

from __future__ import annotations

import pytest

from appliance.openai.sse import DONE, EventTooLarge, SSEDecoder, encode


def test_events_split_at_any_byte_boundary_decode_the_same() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    for size in range(1, len(stream) + 1):
        dec = SSEDecoder()
        out = []
        for i in range(0, len(stream), size):
            out += dec.feed(stream[i:i + size])
        assert out == [b'{"a":1}', b'{"b":2}', DONE], size


def test_crlf_comments_other_fields_and_multiline_data() -> None:
    dec = SSEDecoder()
    out = dec.feed(b": keep-alive\r\nevent: message\r\nid: 7\r\ndata: one\r\ndata: two\r\n\r\ndata:x\n\n")
    assert out == [b"one\ntwo", b"x"]


def test_a_final_event_without_blank_line_is_flushed_on_close() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: last") == []
    assert dec.close() == [b"last"]


def test_encode_round_trips() -> None:
    assert SSEDecoder().feed(encode(b'{"x":"y"}')) == [b'{"x":"y"}']


def test_crlf_split_between_reads_is_one_line_end() -> None:
    stream = b"data: a\r\ndata: b\r\n\r\n: note\r\ndata: c\r\rdata: d\n\n"
    for size in range(1, len(stream) + 1):
        dec = SSEDecoder()
        out = []
        for i in range(0, len(stream), size):
            out += dec.feed(stream[i:i + size])
        assert out == [b"a\nb", b"c", b"d"], size


def test_a_final_event_after_a_trailing_cr_is_flushed_on_close() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: last\r") == []
    assert dec.close() == [b"last"]


def test_an_event_up_to_the_bound_passes_in_any_pieces_and_one_byte_more_does_not() -> None:
    payload = b"x" * 1000
    stream = b"data: " + payload + b"\n\n"
    bound = len(stream) - 1  # counted as sent: `data: `, the payload, its line end
    for size in (1, 7, 100, len(stream)):
        dec = SSEDecoder(max_event_bytes=bound)
        out = []
        for i in range(0, len(stream), size):
            out += dec.feed(stream[i:i + size])
        assert out == [payload], size
        dec = SSEDecoder(max_event_bytes=bound - 1)
        with pytest.raises(EventTooLarge):
            for i in range(0, len(stream), size):
                dec.feed(stream[i:i + size])


@pytest.mark.parametrize("pieces", [
    [b"data: " + b"x" * 5000],                            # one line still arriving
    [b"data: " + b"x" * 600] * 10,                        # the same line in pieces
    [b"data: " + b"x" * 600 + b"\n"] * 10,                # many data lines of one event
    [b"data: " + b"x" * 5000 + b"\n\n"],                  # a whole event in one read
    [b": " + b"x" * 5000],                                # a comment line is a line too
], ids=["line", "line-in-pieces", "data-lines", "one-read", "comment"])
def test_an_event_past_the_bound_raises(pieces: list[bytes]) -> None:
    dec = SSEDecoder(max_event_bytes=4096)
    with pytest.raises(EventTooLarge) as err:
        for piece in pieces:
            dec.feed(piece)
    assert err.value.limit == 4096


def test_the_bound_is_per_event() -> None:
    dec = SSEDecoder(max_event_bytes=100)
    event = b"data: " + b"x" * 90 + b"\n\n"
    assert dec.feed(event * 50) == [b"x" * 90] * 50
