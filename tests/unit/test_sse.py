"""The SSE codec: events split across reads, line endings, comments, multi-line data."""

from __future__ import annotations

from appliance.openai.sse import DONE, SSEDecoder, encode


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
