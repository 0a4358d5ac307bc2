import numpy as np
import pytest

from finetower.artifacts import file_sha256
from finetower.dataset import (
    BLOCK_ROWS,
    SampleDataset,
    TextStream,
    batches_from_chunks,
    cached_conversion,
    convert_text,
    read_in_background,
    write_dataset,
)
from finetower.errors import DataError
from finetower.generate import generate_samples
from finetower.textformat import read_text_samples


@pytest.fixture
def big_dataset(tmp_path):
    """More rows than one shuffle window, with each row's index stored in its label slot."""
    rows = BLOCK_ROWS * 20 + 123
    chunk = generate_samples(rows, user_dim=2, item_dim=2, seed=3)
    chunk.users[:, 0] = np.arange(rows)
    return write_dataset(tmp_path / "ds", [chunk])


def row_ids(batches):
    return np.concatenate([b.users[:, 0].numpy() for b in batches]).astype(np.int64)


def test_convert_keeps_every_value_and_records_the_source(sample_files, tmp_path):
    dataset, bad = convert_text(sample_files["val"], tmp_path / "val")
    text = read_text_samples(sample_files["val"])
    assert bad.count == 0
    assert (dataset.rows, dataset.user_dim, dataset.item_dim) == (2000, 128, 128)
    np.testing.assert_array_equal(dataset.users, text.users)
    np.testing.assert_array_equal(dataset.items, text.items)
    np.testing.assert_array_equal(dataset.labels, text.labels)
    assert dataset.manifest["source"]["sha256"] == file_sha256(sample_files["val"])


def test_failed_conversion_leaves_the_previous_data_set_intact(sample_files, tmp_path):
    out = tmp_path / "ds"
    convert_text(sample_files["val"], out)
    bad = tmp_path / "bad.txt"
    bad.write_text(sample_files["val"].read_text()[:100_000] + "1,oops\n")
    with pytest.raises(DataError):
        convert_text(bad, out)
    assert SampleDataset(out).rows == 2000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_shuffled_epoch_visits_every_row_once(big_dataset):
    ids = row_ids(big_dataset.batches(1000, seed=7, epoch=0))
    assert len(ids) == big_dataset.rows
    assert np.array_equal(np.sort(ids), np.arange(big_dataset.rows))
    assert not np.array_equal(ids, np.arange(big_dataset.rows))


def test_order_depends_only_on_seed_and_epoch(big_dataset):
    first = row_ids(big_dataset.batches(1000, seed=7, epoch=0))
    again = row_ids(big_dataset.batches(1000, seed=7, epoch=0))
    other_epoch = row_ids(big_dataset.batches(1000, seed=7, epoch=1))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_epoch)


def test_starting_at_a_batch_continues_the_same_stream(big_dataset):
    full = row_ids(big_dataset.batches(1000, seed=7, epoch=2))
    tail = row_ids(big_dataset.batches(1000, seed=7, epoch=2, start_batch=57))
    assert np.array_equal(tail, full[57_000:])


def test_batches_are_full_except_the_last(big_dataset):
    sizes = [len(b) for b in big_dataset.batches(1000, seed=1)]
    assert set(sizes[:-1]) == {1000}
    assert sizes[-1] == big_dataset.rows % 1000


def test_batches_straddle_chunks_of_any_size(big_dataset):
    sizes = [3, 1, 7, 2, 5, 4, 1]  # batch 4: batches span up to three chunks
    rows = big_dataset.chunk(0, sum(sizes))
    bounds = np.cumsum([0, *sizes])
    chunks = [rows.take(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    everything = np.arange(sum(sizes))
    for start_batch in range(7):
        batches = list(batches_from_chunks(iter(chunks), 4, start_batch=start_batch))
        assert [len(b) for b in batches] == [4] * (5 - start_batch) + [3] * (start_batch < 6)
        assert np.array_equal(row_ids(batches) if batches else [], everything[4 * start_batch :])


def test_reading_ahead_gives_the_same_batches(big_dataset):
    plain = row_ids(big_dataset.batches(1000, seed=7, epoch=1, start_batch=3))
    ahead = row_ids(big_dataset.batches(1000, seed=7, epoch=1, start_batch=3, read_ahead=True))
    assert np.array_equal(plain, ahead)


def test_reading_ahead_raises_the_sources_error_and_closes_it():
    closed = []

    def source():
        try:
            yield 1
            yield 2
            raise DataError("'x' is not a number", "train.txt", 3, 2)
        finally:
            closed.append(True)

    with pytest.raises(DataError, match="line 3"):
        list(read_in_background(source()))
    assert closed == [True]
    reader = read_in_background(source())
    assert next(reader) == 1
    reader.close()  # the worker may be producing item 2 meanwhile
    assert closed == [True, True]


def test_text_stream_gives_the_same_rows(sample_files):
    stream = TextStream(sample_files["val"])
    labels = np.concatenate([b.labels.numpy() for b in stream.batches(128, seed=1)])
    text = read_text_samples(sample_files["val"])
    assert len(labels) == 2000
    assert labels.sum() == text.labels.sum()


def test_cached_conversion_is_reused(sample_files):
    first = cached_conversion(sample_files["val"])
    mtime = (first.directory / "manifest.json").stat().st_mtime_ns
    second = cached_conversion(sample_files["val"])
    assert second.directory == first.directory
    assert (second.directory / "manifest.json").stat().st_mtime_ns == mtime


def test_cache_is_keyed_by_content_and_follows_changes(sample_files, tmp_path):
    text = tmp_path / "train.txt"
    text.write_bytes(sample_files["val"].read_bytes())
    first = cached_conversion(text)
    assert first.directory.name == file_sha256(text)
    copy = tmp_path / "copy.txt"  # the same content elsewhere: the same data set
    copy.write_bytes(text.read_bytes())
    assert cached_conversion(copy).directory == first.directory
    lines = text.read_text().splitlines(keepends=True)
    text.write_text("".join(lines[:100]))  # a changed file is converted again
    changed = cached_conversion(text)
    assert changed.directory.name == file_sha256(text) != first.directory.name
    assert changed.rows == 100 and first.rows == 2000


def test_checksum_covers_every_byte_without_a_final_newline(sample_files, tmp_path):
    text = tmp_path / "no-newline.txt"
    text.write_bytes(sample_files["val"].read_bytes().rstrip(b"\n"))
    dataset, _ = convert_text(text, tmp_path / "ds")
    assert dataset.rows == 2000
    assert dataset.manifest["source"]["sha256"] == file_sha256(text)


def test_checksum_fed_chunk_by_chunk_equals_the_file_checksum(sample_files):
    import hashlib

    from finetower.textformat import iter_text_chunks

    digest = hashlib.sha256()
    chunks = list(iter_text_chunks(sample_files["val"], digest=digest, chunk_bytes=1 << 16))
    assert len(chunks) > 50 and sum(len(c) for c in chunks) == 2000
    assert digest.hexdigest() == file_sha256(sample_files["val"])
