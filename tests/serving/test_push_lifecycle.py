"""Issue 20's test, through ServingConfig: two pushes in a row while eight clients call
/recall on the real recall service process, the stand-in model server polling the
models.config that ServingConfig writes, and a real redis-server (the `world` of
test_recall_faults). Version 2's item embeddings are version 1's negated (the ranking turns
over), version 3's doubled: an answer that mixed two versions' parts would match neither."""

from __future__ import annotations

import threading

import grpc
import httpx
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, model_service_pb2_grpc

from components.serving_config.component import serve_version
from tests.components.embeddings_publisher.test_embeddings_publisher import push_copy, run_publisher
from tests.serving.test_recall_faults import USER, world  # noqa: F401 (the module's fixture)
from tests.serving.test_recall_service import wait_for

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
SCALES = {2: -1.0, 3: 2.0}  # item embeddings of versions 2 and 3: version 1's times these


@pytest.fixture(scope="module")
def service_timeout_s() -> float:
    """This world's --timeout_s. Eight clients, the publisher and an infra-validation model
    server share two cores here: the fault tests' 0.5 s deadline once ran out in CI while a
    request waited its turn (a 503 before the tower was called; with two busy loops beside
    it the slowest of 9,619 requests took 0.47 s). This test asks whether a switch ever
    leaves a request unanswered, so a request fails only if the service stalls for several
    times its default second."""
    return 5.0


def user_tower_versions(target: str) -> list[int]:
    """The user tower versions the model server has AVAILABLE."""
    with grpc.insecure_channel(target) as channel:
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(
                model_spec=model_pb2.ModelSpec(name="user_tower")
            ),
            timeout=5,
        )
    return sorted(s.version for s in status.model_version_status if s.state == AVAILABLE)


def config_changes(root) -> int:
    """How many times the world's model server has applied a changed models.config."""
    log = root / "ms.log"
    return log.read_text().count("changed: applying it") if log.exists() else 0


def answer_key(body: dict) -> list[tuple[str, float]]:
    return [(item["item_id"], round(item["score"], 4)) for item in body["items"]]


def test_two_pushes_in_a_row_through_serving_config_under_eight_clients(world):  # noqa: F811
    http, redis, out = world["http"], world["redis"], world["out"]
    serving, target = str(out / "serving"), world["model_server"].target
    published = dict(redis_url=redis.url, keep=1)
    # the world's model server started on the Pusher-era `latest` policy, which would load
    # version 2 as soon as it is on disk: wait until it has applied the config naming [1]
    # (its own log line), so that only ServingConfig decides what it loads from here on
    applied = config_changes(world["root"])
    serve_version(serving, str(out), 1, infra_validate=False, **published)  # [1], as a run does
    wait_for(lambda: config_changes(world["root"]) > applied, 60, "the config [1] not applied")
    wait_for(lambda: user_tower_versions(target) == [1], 60, "the config's version 1 only")
    bodies = [USER, {"history": world["history"], "n": 5}] * 4
    per_client: list[list[tuple[int, dict]]] = [[] for _ in bodies]
    stop = threading.Event()

    def load(body: dict, results: list) -> None:
        with httpx.Client(base_url=http.base_url, timeout=10.0) as own:
            while not stop.is_set():
                answer = own.post("/recall", json=body)
                results.append((answer.status_code, answer.json()))

    def done() -> int:
        return min(len(results) for results in per_client)

    threads = [threading.Thread(target=load, args=a) for a in zip(bodies, per_client, strict=True)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: done() >= 5, 60, "no load")
        for version in (2, 3):
            push_copy(out, version, scale=SCALES[version])
            run_publisher(out, version, world["root"], redis_url=redis.url, items=world["items"])
            # infra-validated in a model server of its own, then named beside the served one
            report = serve_version(serving, str(out), version, **published)
            assert report["infra_validation"]["requests"] == {"user_tower": 1, "item_tower": 1}
            assert report["named"] == [version - 1, version]
            wait_for(lambda v=version: http.get("/health").json()["version"] == v, 90,
                     f"version {version} not served")  # fmt: skip
        # version 1 left the config only once the service served 2; it is unloaded after that
        wait_for(lambda: user_tower_versions(target) == [2, 3], 60, "version 1 not unloaded")
        settled = done()
        wait_for(lambda: done() >= settled + 5, 60, "no load after the switches")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert (out / "serving" / "user_tower" / "1").is_dir()  # named by the previous config
    reference: dict[tuple[int, int], list] = {}  # (client kind, version) -> its one answer
    for client, results in enumerate(per_client):
        failed = [(status, body) for status, body in results if status != 200]
        assert not failed, failed[:3]
        versions = [body["version"] for _, body in results]
        assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 3
        assert 2 in versions
        for _, body in results:
            key = answer_key(body)
            assert reference.setdefault((client % 2, body["version"]), key) == key
    for kind in (0, 1):
        ranked = [[i for i, _ in reference[(kind, v)]] for v in (1, 2, 3)]
        assert ranked[0] != ranked[1] and ranked[0] == ranked[2]  # 2 turned the ranking over
