"""The recall service's serving log (serving/recall/skew_log.py) on its own: seeded sampling,
whole files with the u1..uD header, rotation, and a full queue that drops and counts."""

from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest

from serving.recall.skew_log import LogSettings, ServingLog, column_names, log_files


def read_log(folder) -> tuple[list[str], np.ndarray]:
    headers, rows = set(), []
    for path in log_files(folder):
        with path.open() as f:
            reader = csv.reader(f)
            headers.add(tuple(next(reader)))
            rows += [[float(v) for v in row] for row in reader]
    assert len(headers) <= 1, headers
    return list(headers.pop()) if headers else [], np.array(rows, np.float32)


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.02)  # a poll interval


def test_every_offered_vector_is_written_whole_with_the_header(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(25, 6)).astype(np.float32)
    serving_log = ServingLog(LogSettings(str(tmp_path), rate=1.0, rows_per_file=10))
    serving_log.start()
    for vector in vectors:
        assert serving_log.offer(3, vector)
    serving_log.stop()
    files = log_files(tmp_path)
    # 10 + 10 + 5 rows: bounded files, the last written at stop
    assert len(files) == 3 and all(f.name.endswith("-v3.csv") for f in files)
    header, rows = read_log(tmp_path)
    assert header == column_names(6) == ["u1", "u2", "u3", "u4", "u5", "u6"]
    np.testing.assert_allclose(rows, vectors, rtol=1e-7)
    assert (serving_log.sampled, serving_log.written, serving_log.dropped) == (25, 25, 0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_sampling_is_seeded_and_near_the_rate(tmp_path):
    def sampled(seed: int) -> list[bool]:
        serving_log = ServingLog(LogSettings(str(tmp_path / str(seed)), rate=0.1, seed=seed))
        return [serving_log.offer(1, np.zeros(2, np.float32)) for _ in range(5000)]

    first, again, other = sampled(7), sampled(7), sampled(8)
    assert first == again and first != other
    assert 400 <= sum(first) <= 600  # 10% of 5,000 within ~5 standard deviations


def test_a_version_switch_starts_a_new_file_and_old_files_are_rotated_out(tmp_path):
    serving_log = ServingLog(LogSettings(str(tmp_path), rate=1.0, rows_per_file=2, max_files=3))
    serving_log.start()
    for version, dim in ((1, 4), (1, 4), (1, 4), (2, 3), (2, 3), (2, 3), (2, 3)):
        serving_log.offer(version, np.full(dim, version, np.float32))
    serving_log.stop()
    # files written: v1 [2], v1 [1], v2 [2], v2 [2]: the oldest is gone
    names = [p.name for p in log_files(tmp_path)]
    assert len(names) == 3 and names[0].endswith("-v1.csv") and names[-1].endswith("-v2.csv")
    assert serving_log.files == 4 and serving_log.written == 7


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    serving_log = ServingLog(LogSettings(str(tmp_path), rate=1.0, queue_rows=5))
    # the writer is not started: nothing drains the queue, as when the disk stalls
    started = time.monotonic()
    accepted = [serving_log.offer(1, np.ones(4, np.float32)) for _ in range(12)]
    assert time.monotonic() - started < 1.0
    assert accepted == [True] * 5 + [False] * 7
    assert (serving_log.sampled, serving_log.dropped) == (12, 7)
    serving_log.start()
    serving_log.stop()
    assert serving_log.written == 5 and len(read_log(tmp_path)[1]) == 5


def test_a_file_is_written_by_its_deadline_without_more_rows(tmp_path):
    serving_log = ServingLog(LogSettings(str(tmp_path), rate=1.0, flush_s=0.3))
    serving_log.start()
    try:
        serving_log.offer(1, np.ones(4, np.float32))
        wait_until(lambda: len(log_files(tmp_path)) == 1)
    finally:
        serving_log.stop()


def test_offers_from_many_threads_are_all_counted(tmp_path):
    serving_log = ServingLog(LogSettings(str(tmp_path), rate=1.0, rows_per_file=100))
    serving_log.start()

    def offer_many() -> None:
        for _ in range(200):
            serving_log.offer(1, np.ones(3, np.float32))

    threads = [threading.Thread(target=offer_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    serving_log.stop()
    assert serving_log.sampled == 800 == serving_log.written + serving_log.dropped
    assert len(read_log(tmp_path)[1]) == serving_log.written


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0}, {"rate": 1.5}, {"rows_per_file": 0}, {"queue_rows": 0}]
)
def test_bad_settings_are_refused_by_name(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LogSettings(str(tmp_path), **kwargs)
