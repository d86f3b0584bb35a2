"""Handler return values -> replies, following Nuclio's Python runtime."""

from __future__ import annotations

import nuclio_sdk
import pytest

from sluice.outputs import Reply, error_reply, exception_reply, to_reply


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("hello", Reply(200, b"hello", "text/plain")),
        (b"\x00raw", Reply(200, b"\x00raw", "text/plain")),
        ({"a": 1}, Reply(200, b'{"a":1}', "application/json")),
        ([1, 2], Reply(200, b"[1,2]", "application/json")),
        ((201, "made"), Reply(201, b"made", "text/plain")),
        ((400, {"why": "bad"}), Reply(400, b'{"why":"bad"}', "application/json")),
        ((204, b""), Reply(204, b"", "text/plain")),
        (None, Reply(200, b"", "text/plain")),
        (42, Reply(200, b"42", "text/plain")),
        (nuclio_sdk.Response(body="x", status_code=202, content_type="text/csv",
                             headers={"X-A": 1}),
         Reply(202, b"x", "text/csv", {"X-A": "1"})),
        (nuclio_sdk.Response(body={"k": "v"}, content_type="text/plain"),
         Reply(200, b'{"k":"v"}', "application/json")),
        (nuclio_sdk.Response(body="b", event_id="e1"), Reply(200, b"b", "text/plain", {}, "e1")),
    ],
)
def test_to_reply(output, expected):
    assert to_reply(output) == expected


def test_unencodable_body_raises_so_the_runner_can_report_it():
    with pytest.raises(TypeError):
        to_reply({"x": object()})


def test_exception_with_response():
    exc = nuclio_sdk.ExceptionWithResponse(409, "conflict")
    assert exception_reply(exc) == Reply(409, b"conflict", "text/plain")
    assert exception_reply(nuclio_sdk.ExceptionWithResponse(422, {"e": 1})).content_type == (
        "application/json")


def test_error_reply_is_json_with_id():
    reply = error_reply(500, "it broke", "abc123")
    assert reply.status == 500
    assert reply.body == b'{"error":"it broke","error_id":"abc123"}'
