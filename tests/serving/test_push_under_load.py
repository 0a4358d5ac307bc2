"""Versions pushed while clients call the real recall service (the `world` of
test_recall_faults: uvicorn, the local model server on the Pusher-era `latest` policy, a real
redis-server), in a world of its own whose service deadline leaves room for a loaded machine:
with the fault tests' 0.5 s a request once ran out of time in CI while it queued behind the
publisher on two cores, which says nothing of the switch. Here a failed request means the
switch left it unanswered."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.components.embeddings_publisher.test_embeddings_publisher import push_copy, run_publisher
from tests.serving.test_recall_faults import USER, world  # noqa: F401 (the module's fixture)
from tests.serving.test_recall_service import wait_for


@pytest.fixture(scope="module")
def service_timeout_s() -> float:
    """The world's --timeout_s: 5 s, several times the service's default second."""
    return 5.0


def test_a_version_pushed_under_load_fails_no_request(world):  # noqa: F811
    http, redis = world["http"], world["redis"]
    per_thread: list[list[tuple[int, int | None]]] = [[], []]
    stop = threading.Event()

    def load(body: dict, results: list) -> None:
        with httpx.Client(base_url=http.base_url, timeout=10.0) as own:
            while not stop.is_set():
                answer = own.post("/recall", json=body)
                version = answer.json().get("version") if answer.status_code == 200 else None
                results.append((answer.status_code, version))

    def done() -> int:
        return min(len(results) for results in per_thread)

    bodies = (USER, {"history": world["history"], "n": 5})
    threads = [
        threading.Thread(target=load, args=(body, results))
        for body, results in zip(bodies, per_thread, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: done() >= 10, 30, "no load")
        push_copy(world["out"], 2)  # both towers: the model server loads version 2 beside 1
        run_publisher(world["out"], 2, world["root"], redis_url=redis.url, items=world["items"])
        wait_for(lambda: http.get("/health").json()["version"] == 2, 90, "version 2 not served")
        settled = done()
        wait_for(lambda: done() >= settled + 10, 30, "no load after the switch")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    for results in per_thread:
        failed = [r for r in results if r[0] != 200]
        assert not failed, failed[:5]
        versions = [v for _, v in results]
        # each client saw version 1, then version 2, and never 1 again once it had seen 2
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions)


def test_two_pushes_in_a_row_under_eight_clients_fail_nothing_and_never_mix(world):  # noqa: F811
    """Versions 3 and 4 are version 1's towers with item embeddings times 3 and times 4: an
    answer's scores say which version's items it used. Eight clients (user vectors and
    histories) across both switches: no error, versions never go back, and every answer's
    scores are those of the version it names."""
    http, redis = world["http"], world["redis"]
    scale = {1: 1.0, 2: 1.0, 3: 3.0, 4: 4.0}  # the earlier test pushed 2 as a plain copy
    bodies = [USER, {"history": world["history"], "n": 5}] * 4
    first = {i: http.post("/recall", json=body).json() for i, body in enumerate(bodies[:2])}
    per_client: list[list[tuple[int, dict | None]]] = [[] for _ in bodies]
    stop = threading.Event()

    def load(body: dict, results: list) -> None:
        with httpx.Client(base_url=http.base_url, timeout=10.0) as own:
            while not stop.is_set():
                answer = own.post("/recall", json=body)
                results.append((answer.status_code, answer.json()))

    def done() -> int:
        return min(len(results) for results in per_client)

    threads = [
        threading.Thread(target=load, args=(body, results))
        for body, results in zip(bodies, per_client, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: done() >= 5, 60, "no load")
        for version in (3, 4):
            push_copy(world["out"], version, scale=scale[version])
            run_publisher(world["out"], version, world["root"], redis_url=redis.url,
                          items=world["items"])  # fmt: skip
            wait_for(lambda v=version: http.get("/health").json()["version"] == v, 90,
                     f"version {version} not served")  # fmt: skip
        settled = done()
        wait_for(lambda: done() >= settled + 5, 60, "no load after the switches")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    for client, results in enumerate(per_client):
        failed = [(status, body) for status, body in results if status != 200]
        assert not failed, failed[:3]
        versions = [body["version"] for _, body in results]
        assert versions == sorted(versions) and versions[-1] == 4 and 3 in versions
        reference = first[client % 2]
        base = scale[reference["version"]]
        bias = json.loads((world["out"] / "ann_index" / "1" / "manifest.json").read_text())[
            "output_bias"
        ]
        for _, body in results:
            assert [i["item_id"] for i in body["items"]] == [
                i["item_id"] for i in reference["items"]
            ]  # a positive scale keeps the ranking
            ratio = scale[body["version"]] / base
            for got, ref in zip(body["items"], reference["items"], strict=True):
                # score = query · embedding + b: the dot product scales with the embeddings
                assert got["score"] - bias == pytest.approx(ratio * (ref["score"] - bias), rel=1e-4)
