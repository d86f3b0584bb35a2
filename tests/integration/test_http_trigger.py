"""The HTTP trigger over real sockets, against a real worker process (no platform)."""

from __future__ import annotations

import concurrent.futures
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

H = "nuclio_style.py"


def test_json_body_is_decoded_and_dict_answer_is_json(start_worker):
    worker = start_worker(f"{H}:echo")
    response = worker.post(json={"x": 1, "values": [0.5, 1.5]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"x": 1, "values": [0.5, 1.5]}


def test_event_carries_method_path_query_headers_and_raw_body(start_worker):
    worker = start_worker(f"{H}:describe")
    response = httpx.put(worker.url + "/items/7?limit=5&q=fraud", content=b"plain text",
                         headers={"x-custom-header": "abc", "content-type": "text/plain"})
    seen = response.json()
    assert seen["method"] == "PUT"
    assert seen["path"] == "/items/7"
    assert seen["url"] == "/items/7?limit=5&q=fraud"
    assert seen["fields"] == {"limit": "5", "q": "fraud"}
    assert seen["body"] == "plain text"  # non-JSON bodies arrive as bytes
    assert seen["content_type"] == "text/plain"
    assert seen["header_lower"] == seen["header_title"] == seen["get_header"] == "abc"
    assert seen["trigger_kind"] == "http"
    assert seen["has_id"] is True
    assert seen["size"] == len(b"plain text")


@pytest.mark.parametrize(
    ("function", "status", "content_type", "body"),
    [
        ("created", 201, "application/json", b'{"created":true}'),
        ("teapot", 418, "application/json", b'{"short":"and stout"}'),
        ("text_tuple", 202, "text/plain", b"accepted"),
        ("raw_bytes", 200, "text/plain", b"\x00\x01binary"),
        ("deliberate", 409, "text/plain", b"already exists"),
        ("json_text", 200, "text/plain", b'{"n": 1}'),
    ],
)
def test_return_values_become_responses_as_in_nuclio(start_worker, function, status,
                                                      content_type, body):
    worker = start_worker(f"{H}:{function}")
    response = worker.post(json={})
    assert response.status_code == status
    assert response.headers["content-type"] == content_type
    assert response.content == body


def test_response_headers_from_handler_are_sent(start_worker):
    worker = start_worker(f"{H}:created")
    assert worker.post().headers["x-resource"] == "42"


def test_handler_exception_is_500_with_error_id_and_worker_lives_on(start_worker):
    worker = start_worker(f"{H}:crash")
    first = worker.post(json={})
    assert first.status_code == 500
    payload = first.json()
    assert "ValueError: boom" in payload["error"]
    assert re.fullmatch(r"[0-9a-f]{12}", payload["error_id"])
    second = worker.post(json={})  # same process still serves
    assert second.status_code == 500 and second.json()["error_id"] != payload["error_id"]
    assert worker.process.poll() is None


def test_system_exit_in_handler_does_not_kill_the_worker(start_worker):
    worker = start_worker(f"{H}:exits")
    assert worker.post().status_code == 500
    assert worker.post().status_code == 500
    assert worker.process.poll() is None


def test_unserialisable_return_value_is_a_clear_500(start_worker):
    worker = start_worker(f"{H}:unserialisable")
    response = worker.post()
    assert response.status_code == 500
    assert "cannot be sent" in response.json()["error"]


def test_init_context_state_survives_across_calls(start_worker):
    worker = start_worker(f"{H}:greet", env={"GREETING": "hi"})
    with httpx.Client(base_url=worker.url) as client:
        answers = [client.post("/", json={"name": "ada"}).json() for _ in range(3)]
    assert [a["calls"] for a in answers] == [1, 2, 3]
    assert answers[0]["greeting"] == "hi, ada"
    assert answers[0]["worker"] == 0


def test_malformed_json_body_is_400_with_json_error(start_worker):
    worker = start_worker(f"{H}:echo")
    response = worker.post(content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_oversized_body_is_413_and_worker_keeps_serving(start_worker):
    worker = start_worker(f"{H}:echo", "--max-body", "1000")
    response = worker.post(content=b"x" * 5000)
    assert response.status_code == 413
    assert "over the limit of 1000 bytes" in response.json()["error"]
    assert worker.post(content=b"small").content == b"small"


def test_malformed_http_is_400_not_a_hang(start_worker):
    worker = start_worker(f"{H}:echo")
    port = int(worker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"malformed HTTP request" in answer


def test_pipelined_requests_are_answered_in_order(start_worker):
    worker = start_worker(f"{H}:async_echo")
    port = int(worker.url.rsplit(":", 1)[1])
    requests = b"".join(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in (b'{"n":1}', b'{"n":2}', b'{"n":3}')
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"}}"):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    order = [int(n) for n in re.findall(rb'"n":(\d)', data)]
    assert order == [1, 2, 3]


def test_head_request_has_no_body(start_worker):
    worker = start_worker(f"{H}:json_text")
    response = httpx.head(worker.url)
    assert response.status_code == 200
    assert response.headers["content-length"] == "8"
    assert response.content == b""


def test_async_handler_runs_concurrently(start_worker):
    worker = start_worker(f"{H}:async_sleepy")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: httpx.get(worker.url + "/?seconds=0.5", timeout=10),
                                range(8)))
    assert all(r.status_code == 200 for r in results)
    assert time.monotonic() - started < 3.0  # eight half-second calls overlapped


def test_async_handler_past_timeout_is_504_and_worker_lives(start_worker):
    worker = start_worker(f"{H}:async_sleepy", "--timeout", "0.3")
    response = httpx.get(worker.url + "/?seconds=5", timeout=10)
    assert response.status_code == 504
    assert "did not finish within 0.3s" in response.json()["error"]
    assert httpx.get(worker.url + "/?seconds=0", timeout=10).status_code == 200


def test_inflight_limit_answers_503_with_retry_after(start_worker):
    worker = start_worker(f"{H}:async_sleepy", "--max-inflight", "2")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: httpx.get(worker.url + "/?seconds=1", timeout=10),
                                range(6)))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) >= 2
    refused = [r for r in results if r.status_code == 503]
    assert refused, statuses
    assert refused[0].headers["retry-after"] == "1"
    assert "limit 2" in refused[0].json()["error"]


def test_batching_mode_hands_a_list_and_matches_responses_by_event_id(start_worker):
    worker = start_worker(f"{H}:batch_echo", "--batch-size", "4", "--batch-timeout-ms", "200")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: worker.post(json={"i": i}), range(4)))
    assert [r.json()["body"] for r in results] == [{"i": i} for i in range(4)]
    assert max(r.json()["batch_size"] for r in results) > 1  # merged into one call


def test_termination_callback_runs_on_graceful_stop(start_worker, tmp_path: Path):
    worker = start_worker(f"{H}:register_callbacks")
    marker = tmp_path / "terminated.txt"
    assert worker.post(json={"marker": str(marker)}).text == "registered"
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=15) == 0
    assert marker.read_text() == "terminated"


def test_metrics_endpoint_counts_invocations_by_status(start_worker):
    worker = start_worker(f"{H}:crash")

    def count(status: str) -> float:
        page = httpx.get(worker.url + "/metrics").text
        pattern = r'sluice_function_invocations_total\{[^}]*status="' + status + r'"[^}]*\} (\S+)'
        match = re.search(pattern, page)
        return float(match.group(1)) if match else 0.0

    before = count("500")
    for _ in range(3):
        worker.post(json={})
    assert count("500") == before + 3
    page = httpx.get(worker.url + "/metrics").text
    assert "sluice_function_latency_seconds_bucket" in page
    assert "sluice_worker_starts_total" in page


def test_async_handler_that_blocks_the_loop_gets_the_worker_recycled(start_worker):
    worker = start_worker(f"{H}:blocks_loop", "--timeout", "0.5")
    started = time.monotonic()
    with pytest.raises(httpx.HTTPError):
        worker.post(json={}, timeout=20)  # the stuck worker exits; the connection drops
    assert worker.process.wait(timeout=10) == 75  # EXIT_RECYCLED: the platform restarts it
    assert time.monotonic() - started < 8


def test_graceful_stop_finishes_in_flight_requests(start_worker):
    worker = start_worker(f"{H}:slow_then_answer")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(worker.post, json={})
        time.sleep(0.3)  # the request is inside the handler now
        worker.process.send_signal(signal.SIGTERM)
        response = pending.result(timeout=20)
    assert response.status_code == 200 and response.text == "finished"
    assert worker.process.wait(timeout=15) == 0


def test_drain_callback_runs_when_the_worker_drains(start_worker, tmp_path: Path):
    worker = start_worker(f"{H}:register_drain")
    marker = tmp_path / "drained.txt"
    assert worker.post(json={"marker": str(marker)}).text == "registered"
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=15) == 0
    assert marker.read_text() == "drained"


def test_pipelined_requests_answered_at_once_do_not_stall_the_connection(start_worker):
    worker = start_worker(f"{H}:async_echo")
    port = int(worker.url.rsplit(":", 1)[1])
    bad = b"{nope"
    requests = (
        b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n'
        b'\r\n{"n":1}'
        + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(bad)).encode() + b"\r\n\r\n" + bad
        + b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n'
        b'\r\n{"n":4}'
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 ") < 4:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    statuses = re.findall(rb"HTTP/1.1 (\d{3})", data)
    assert statuses == [b"200", b"200", b"400", b"200"]
    assert data.rstrip().endswith(b'"body":{"n":4}}')


def test_oversized_headers_get_431(start_worker):
    worker = start_worker(f"{H}:echo")
    response = httpx.get(worker.url, headers={"x-big": "a" * 70_000})
    assert response.status_code == 431
    assert "over the limit" in response.json()["error"]


def test_a_client_cannot_pass_itself_off_as_a_cron_fire(start_worker):
    worker = start_worker(f"{H}:describe")
    seen = httpx.post(worker.url, content=b"x", headers={"X-Sluice-Trigger": "cron/nightly",
                                                         "X-Sluice-Trigger-Token": "guess"}).json()
    assert seen["trigger_kind"] == "http"


def test_idle_and_trickling_connections_are_closed(start_worker):
    worker = start_worker(f"{H}:echo", "--idle-timeout", "0.5")
    port = int(worker.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        time.sleep(1.5)
        assert sock.recv(1024) == b""  # closed by the worker
    assert worker.post(content=b"still serving").content == b"still serving"


def test_a_refused_pipelined_request_is_answered_after_the_one_before_it(start_worker):
    worker = start_worker(f"{H}:async_sleepy", "--max-body", "100")
    port = int(worker.url.rsplit(":", 1)[1])
    requests = (b"GET /?seconds=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + b"x" * 500)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 ") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert re.findall(rb"HTTP/1.1 (\d{3})", data) == [b"200", b"413"]
    assert b"woke up" in data
