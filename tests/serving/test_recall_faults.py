"""Faults with real processes: the recall service under uvicorn (`python -m serving.recall`),
the local model server and a redis-server, each stopped and started again. Every outage
must give 503 within the configured timeout, never a hang, and service must come back
when the part does. (Pushes under load: test_push_under_load.py, in a world of its own.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.components.embeddings_publisher.test_embeddings_publisher import run_publisher
from tests.redis_server import RedisServer, free_port, redis_server_path
from tests.serving.test_recall_service import REPO, ModelServer, prepare_output, wait_for

TIMEOUT_S = 0.5  # the service's --timeout_s: each request's deadline from its arrival
BOUND_S = TIMEOUT_S + 2.0  # an outage's answer: the timeout plus a loaded machine's slack
MARGIN_S = 0.35  # past the deadline, under 64 concurrent clients on a 2-core machine
MAX_IN_FLIGHT = 48  # the service's --max_in_flight, below the 64 clients of the stall test
HEADER_TIMEOUT_S = 1.0
USER = {"user_vector": [0.05] * 128, "n": 5}


@pytest.fixture(scope="module")
def service_timeout_s() -> float:
    """The recall service's --timeout_s in this module's world (a module may set its own)."""
    return TIMEOUT_S


@pytest.fixture(scope="module")
def world(pushed_run, tmp_path_factory, service_timeout_s):
    if redis_server_path() is None:
        pytest.skip("redis-server is not on PATH")
    root = tmp_path_factory.mktemp("faults")
    prepared = prepare_output(pushed_run, root)
    out = prepared["out"]
    redis = RedisServer(root / "redis").start()
    model_server = ModelServer(out / "serving" / "models.config", root / "ms.log")
    port = free_port()
    service = None
    try:
        run_publisher(out, 1, root, redis_url=redis.url, items=prepared["items"])
        model_server.start(1)
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.recall",
                "--serving_dir",
                str(out / "serving"),
                "--output_dir",
                str(out),
                "--tf_serving",
                model_server.target,
                "--redis_url",
                redis.url,
                "--port",
                str(port),
                "--timeout_s",
                str(service_timeout_s),
                "--poll_s",
                "0.2",
                "--max_in_flight",
                str(MAX_IN_FLIGHT),
                "--header_timeout_s",
                str(HEADER_TIMEOUT_S),
                "--body_timeout_s",
                str(HEADER_TIMEOUT_S),
                "--log_level",
                "warning",
            ],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=(root / "recall.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)

        def ready():
            if service.poll() is not None:
                raise RuntimeError((root / "recall.log").read_text()[-3000:])
            try:
                return http.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 120, "the recall service is not ready")
        history = http.post("/recall", json=USER).json()["items"]
        yield {
            **prepared,
            "redis": redis,
            "model_server": model_server,
            "http": http,
            "history": [item["item_id"] for item in history],
            "log": root / "recall.log",
            "port": port,
        }
        http.close()
    finally:
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
        model_server.stop()
        redis.stop()


def timed_post(http: httpx.Client, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = http.post("/recall", json=body)
    return answer, time.monotonic() - started


def test_tf_serving_down_is_503_within_the_timeout_and_recovers(world):
    http, server = world["http"], world["model_server"]
    server.stop()
    answer, seconds = timed_post(http, USER)
    assert answer.status_code == 503 and "did not answer" in answer.json()["error"]
    assert seconds < BOUND_S
    server.start(1)
    wait_for(lambda: http.post("/recall", json=USER).status_code == 200, 60, "no recovery")


def test_a_hung_redis_is_503_for_histories_within_the_timeout(world):
    http, redis = world["http"], world["redis"]
    body = {"history": world["history"], "n": 5}
    assert http.post("/recall", json=body).status_code == 200
    redis.pause()
    try:
        answer, seconds = timed_post(http, body)
        assert answer.status_code == 503 and "Redis" in answer.json()["error"]
        assert seconds < BOUND_S
        assert http.post("/recall", json=USER).status_code == 200  # needs no Redis
    finally:
        redis.resume()
    wait_for(lambda: http.post("/recall", json=body).status_code == 200, 30, "no recovery")


def test_redis_down_and_back_empty_recovers_on_republish(world):
    http, redis = world["http"], world["redis"]
    body = {"history": world["history"], "n": 5}
    redis.stop()
    answer, seconds = timed_post(http, body)
    assert answer.status_code == 503 and seconds < BOUND_S
    wait_for(
        lambda: http.get("/health").json().get("redis") == "unreachable", 10, "health says nothing"
    )
    redis.start()  # no persistence: the store comes back empty
    answer = http.post("/recall", json=body)
    assert answer.status_code == 503 and "gone" in answer.json()["error"]
    run_publisher(world["out"], 1, world["root"], redis_url=redis.url, items=world["items"])
    wait_for(lambda: http.post("/recall", json=body).status_code == 200, 30, "no recovery")
    assert http.get("/health").json()["versions"]["store"].startswith("v1-")


def concurrent_posts(port: int, body: dict, clients: int) -> list[tuple[int, float, dict, dict]]:
    """`clients` requests sent together over as many warm keep-alive connections, from one
    asyncio thread (64 client threads would add their own scheduling delays to the figures):
    (status, seconds from send to the whole answer, headers, JSON body) each."""
    payload = json.dumps(body).encode()
    request = (
        b"POST /recall HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )

    async def answer(reader: asyncio.StreamReader) -> tuple[int, dict, dict]:
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        content = await reader.readexactly(int(headers["content-length"]))
        return status, headers, json.loads(content)

    async def one(connection, go: asyncio.Event) -> tuple[int, float, dict, dict]:
        reader, writer = connection
        await go.wait()
        started = time.monotonic()
        writer.write(request)
        status, headers, content = await answer(reader)
        seconds = time.monotonic() - started
        writer.close()
        return status, seconds, headers, content

    async def run() -> list:
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
        for reader, writer in connections:  # each connection warm: one request answered
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await answer(reader)
        go = asyncio.Event()
        tasks = [asyncio.create_task(one(c, go)) for c in connections]
        go.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    return asyncio.run(run())


def test_a_stalled_model_server_answers_every_request_by_its_deadline_and_recovers(world):
    """64 clients at once while the model server is SIGSTOPped: beyond --max_in_flight an
    immediate 503 with Retry-After; the others 503 by their deadline (arrival + timeout);
    none later than the deadline plus a small margin. After SIGCONT all answer 200."""
    http, server = world["http"], world["model_server"]
    server.process.send_signal(signal.SIGSTOP)
    try:
        answers = concurrent_posts(world["port"], USER, 64)
    finally:
        server.process.send_signal(signal.SIGCONT)
    statuses = [status for status, *_ in answers]
    seconds = sorted(s for _, s, *_ in answers)
    assert set(statuses) == {503}, statuses
    assert seconds[-1] <= TIMEOUT_S + MARGIN_S, seconds[-5:]
    busy = [(headers, body) for _, _, headers, body in answers if "busy" in body["error"]]
    assert len(busy) >= 64 - MAX_IN_FLIGHT
    assert all(headers["retry-after"] == "1" for headers, _ in busy)
    for *_, body in answers:
        text = json.dumps(body)
        assert server.target not in text and world["redis"].url not in text

    wait_for(lambda: http.post("/recall", json=USER).status_code == 200, 30, "no recovery")
    wait_for(lambda: http.get("/health/ready").status_code == 200, 30, "not ready again")
    recovered = concurrent_posts(world["port"], USER, 32)
    assert {status for status, *_ in recovered} == {200}
    assert max(s for _, s, *_ in recovered) <= TIMEOUT_S + MARGIN_S


def test_a_client_that_sends_its_headers_slowly_is_cut_off(world):
    """The real uvicorn process: a request whose headers never complete gets 408 and a closed
    connection after --header_timeout_s, even while it trickles bytes; others are served."""
    # the server's clock starts when it accepts the connection: start ours before connecting
    # (started after it, the 408 measured 0.9998 s for a 1.0 s timeout)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", world["port"]), timeout=10) as slow:
        slow.sendall(b"POST /recall HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        trickled = 0
        while time.monotonic() - started < HEADER_TIMEOUT_S + 0.5:
            try:
                slow.sendall(b"X-Slow: 1\r\n")  # a header line now and then, never the end
                trickled += 1
            except OSError:
                break  # the server closed it
            assert world["http"].get("/health/live").status_code == 200
            slow.settimeout(0.2)
            try:
                if slow.recv(1, socket.MSG_PEEK):
                    break  # the server answered
            except TimeoutError:
                pass
        slow.settimeout(10)
        answer = b""
        while chunk := slow.recv(4096):  # until the server closes
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert HEADER_TIMEOUT_S <= elapsed < HEADER_TIMEOUT_S + 1.0 and trickled > 1


def test_a_body_that_never_arrives_is_408(world):
    with socket.create_connection(("127.0.0.1", world["port"]), timeout=10) as slow:
        started = time.monotonic()
        slow.sendall(
            b"POST /recall HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"user_vector": ['
        )
        answer = slow.recv(4096)
        elapsed = time.monotonic() - started
        while not answer.endswith(b"}") and (chunk := slow.recv(4096)):
            answer += chunk  # the body may follow the head in a second packet
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"field":"body"' in answer.replace(b" ", b"")
    assert HEADER_TIMEOUT_S <= elapsed < HEADER_TIMEOUT_S + 1.0
