"""bench/loadgen.py and bench/openloop.c against a real uvicorn server on a loopback port.

The server counts what it receives, so each test checks the generator's report against the
other side of the socket. Latency values are only checked for sanity: this machine is noisy.
"""

from __future__ import annotations

import shutil
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import uvicorn

from sluice.platform.broker import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import loadgen  # noqa: E402 - bench/ is a folder of scripts, not a package

pytestmark = pytest.mark.skipif(shutil.which("cc") is None,
                                reason="bench/openloop.c needs a C compiler (cc)")

HOST = "127.0.0.1"
PAYLOAD = bytes(range(256)) * 16  # 4 KiB
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


def counting_app(seen: Counter[str]) -> ASGIApp:
    """/kb: 4 KiB with Content-Length; /chunked: the same chunked; /close: 4 KiB, then closes;
    /every10: 429 for every 10th request; /hang: never answers. Counts requests by path."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        seen[path] += 1
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        if path == "/hang":
            while message["type"] != "http.disconnect":
                message = await receive()
            return
        status = 429 if path == "/every10" and seen[path] % 10 == 0 else 200
        headers = [(b"content-type", b"application/octet-stream")]
        if path == "/chunked":  # no length: uvicorn sends Transfer-Encoding: chunked
            await send({"type": "http.response.start", "status": status, "headers": headers})
            for start in range(0, len(PAYLOAD), 1000):
                await send({"type": "http.response.body", "body": PAYLOAD[start:start + 1000],
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/close":
            headers.append((b"connection", b"close"))
        headers.append((b"content-length", str(len(PAYLOAD)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": PAYLOAD})

    return app


@dataclass
class Server:
    port: int
    seen: Counter[str]


@pytest.fixture
def server() -> Iterator[Server]:
    seen: Counter[str] = Counter()
    config = uvicorn.Config(counting_app(seen), host=HOST, port=free_port(), http="httptools",
                            loop="asyncio", ws="none", lifespan="off", log_level="warning",
                            access_log=False)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Server(config.port, seen)
    finally:
        instance.should_exit = True
        thread.join(10)


def load(port: int, path: str, rate: float = 500, duration: float = 1.0, warmup: float = 0.3,
         **options: Any) -> loadgen.LoadResult:
    return loadgen.run(HOST, port, path, b'{"x": [1, 2, 3]}', {"Content-Type": "application/json"},
                       rate=rate, duration=duration, warmup=warmup, **options)


@pytest.mark.parametrize("path", ["/kb", "/chunked", "/close"])
def test_sends_on_schedule_and_reads_every_answer_to_its_end(server: Server, path: str) -> None:
    result = load(server.port, path)

    assert 375 <= result["sent"] <= 625  # 500/s for 1 s, within Poisson noise
    assert result["scheduled"] == result["sent"] and result["unsent"] == 0
    assert result["ok"] == result["completed"] == result["sent"]
    assert result["status"] == {} and result["errors"] == 0 and result["timeouts"] == 0
    assert server.seen[path] == result["sent"] + result["warmup_sent"]
    assert result["achieved_rate"] == pytest.approx(result["ok"] / 1.0, rel=0.1)
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    if path == "/close":  # every answer closes its connection: one per request
        assert result["connections_opened"] >= result["sent"]


def test_counts_non_2xx_answers_by_status(server: Server) -> None:
    result = load(server.port, "/every10", warmup=0)

    refused = result["sent"] // 10
    assert result["status"] == {"429": refused}
    assert result["ok"] == result["sent"] - refused
    assert result["completed"] == result["sent"] == server.seen["/every10"]


def test_onoff_pattern_offers_the_mean_rate(server: Server) -> None:
    result = load(server.port, "/kb", rate=400, warmup=0, pattern="onoff", on=0.25, off=0.25)

    assert result["pattern"] == "onoff"
    assert 280 <= result["sent"] <= 520
    assert result["ok"] == result["sent"] == server.seen["/kb"]


def test_unanswered_requests_count_as_timeouts_and_free_their_connection(
        server: Server) -> None:
    result = load(server.port, "/hang", rate=50, duration=0.5, warmup=0, timeout=0.3)

    assert result["sent"] > 0
    assert result["timeouts"] == result["sent"] == server.seen["/hang"]
    assert result["completed"] == 0 and result["errors"] == 0


def test_refused_connections_count_as_errors() -> None:
    result = load(free_port(), "/", rate=200, duration=0.5, warmup=0)

    assert result["sent"] > 0
    assert result["error_kinds"] == {"connect": result["sent"], "reset": 0, "malformed": 0}
    assert result["errors"] == result["sent"]
    assert result["completed"] == 0 and result["timeouts"] == 0


# An interim 100, then a chunked answer with a chunk extension and a trailer.
DRIBBLED = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
            b"\r\n5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n")


class Dribbler(socketserver.StreamRequestHandler):
    """Answers each request with ``server.answer`` written 5 bytes at a time, 0.3 ms apart."""

    server: AnsweringServer

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if not line:
                return
            self.rfile.read(length)
            for start in range(0, len(self.server.answer), 5):
                self.wfile.write(self.server.answer[start:start + 5])
                time.sleep(0.0003)


class AnsweringServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, answer: bytes) -> None:
        super().__init__((HOST, 0), Dribbler)
        self.answer = answer


@pytest.mark.parametrize(("answer", "ok", "malformed"), [(DRIBBLED, True, False),
                                                         (b"HELLO\r\n\r\n", False, True)])
def test_answers_split_across_many_reads_are_parsed_and_garbage_is_malformed(
        answer: bytes, ok: bool, malformed: bool) -> None:
    with AnsweringServer(answer) as raw:
        thread = threading.Thread(target=raw.serve_forever, daemon=True)
        thread.start()
        try:
            result = load(raw.server_address[1], "/", rate=50, duration=0.5, warmup=0)
        finally:
            raw.shutdown()
            thread.join(10)

    assert result["sent"] > 0
    assert result["ok"] == (result["sent"] if ok else 0)
    assert result["error_kinds"]["malformed"] == (result["sent"] if malformed else 0)
    assert result["timeouts"] == 0 and result["error_kinds"]["reset"] == 0


def fake_result(p99_ms: float, failed: int = 0) -> loadgen.LoadResult:
    return cast(loadgen.LoadResult, {
        "scheduled": 1000, "unsent": 0, "errors": failed, "timeouts": 0, "status": {},
        "latency_ms": {"p99": p99_ms}, "generator_behind": False})


@pytest.mark.parametrize(("capacity", "rates", "best"), [
    # passes up to 3000/s: ramp 1000, 1500, 2250, 3375 (fails), then four bisection steps
    (3000, [1000, 1500, 2250, 3375, 2812.5, 3093.75, 2953.125, 3023.4375], 2953.125),
    # the start rate already fails: bisect down from it
    (600, [1000, 500, 750, 625, 562.5], 562.5),
    # never fails within the ramp's probes: the last ramp rate
    (10**9, [1000, 1500, 2250], 2250),
])
def test_sustainable_rate_ramps_until_a_failure_then_bisects(
        capacity: float, rates: list[float], best: float) -> None:
    def probe(rate: float) -> loadgen.LoadResult:
        return fake_result(p99_ms=10.0 if rate <= capacity else 200.0)

    found = loadgen.sustainable_rate(probe, start=1000, ramp_probes=3 if capacity > 10**6 else 12,
                                     confirm_failures=False)

    assert [rate for rate, _ in found.probes] == rates
    assert found.rate == best


def test_sustainable_rate_probes_again_when_the_generator_fell_behind() -> None:
    calls: Counter[float] = Counter()

    def probe(rate: float) -> loadgen.LoadResult:
        calls[rate] += 1
        behind = rate == 1500 and calls[rate] == 1  # a neighbour took the core once
        return {**fake_result(p99_ms=10.0 if rate <= 2000 else 200.0),
                "generator_behind": behind}

    found = loadgen.sustainable_rate(probe, start=1000, bisect_probes=0, confirm_failures=False)

    assert [rate for rate, _ in found.probes] == [1000, 1500, 1500, 2250]
    assert found.rate == 1500


def test_a_failed_probe_is_confirmed_before_the_rate_counts_as_failed() -> None:
    calls: Counter[float] = Counter()

    def probe(rate: float) -> loadgen.LoadResult:
        calls[rate] += 1
        stalled = rate == 1500 and calls[rate] == 1  # the machine stalled during one probe
        return fake_result(p99_ms=200.0 if stalled or rate > 2000 else 10.0)

    found = loadgen.sustainable_rate(probe, start=1000, bisect_probes=0)

    assert [rate for rate, _ in found.probes] == [1000, 1500, 1500, 2250, 2250]
    assert found.rate == 1500


def test_a_failure_share_over_the_bound_fails_a_probe_with_a_good_tail() -> None:
    assert loadgen.passes(fake_result(p99_ms=1.0, failed=0), 50.0, 0.001)
    assert not loadgen.passes(fake_result(p99_ms=1.0, failed=1), 50.0, 0.001)
    assert not loadgen.passes({**fake_result(p99_ms=1.0), "generator_behind": True}, 50.0, 0.001)
