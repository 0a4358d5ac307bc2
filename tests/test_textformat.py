from pathlib import Path

import numpy as np
import pytest

from finetower.errors import DataError
from finetower.textformat import BadLines, iter_text_chunks, read_text_samples, write_text_samples


def line(label, values):
    return ",".join([str(label)] + [str(v) for v in values]) + "\n"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def test_reads_values_with_a_space_after_the_comma(tmp_path):
    path = write_lines(tmp_path / "s.txt", ["1, 0.111400, 0.298000, -1.5, 2e-3\n", "0,1,2,3,4\n"])
    samples = read_text_samples(path)
    np.testing.assert_array_equal(samples.labels, [1, 0])
    np.testing.assert_allclose(samples.users, [[0.1114, 0.298], [1, 2]])
    np.testing.assert_allclose(samples.items, [[-1.5, 0.002], [3, 4]])


def test_round_trip_through_the_writer(tmp_path):
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(50, 6)), rng.normal(size=(50, 4))
    labels = rng.integers(0, 2, 50)
    write_text_samples(tmp_path / "s.txt", labels, users, items)
    samples = read_text_samples(tmp_path / "s.txt", user_dim=6)
    np.testing.assert_array_equal(samples.users, users.astype(np.float32))
    np.testing.assert_array_equal(samples.items, items.astype(np.float32))
    np.testing.assert_array_equal(samples.labels, labels)


def test_many_parser_blocks_keep_every_row_in_order(tmp_path):
    rng = np.random.default_rng(1)
    users, items = rng.normal(size=(4000, 128)), rng.normal(size=(4000, 128))
    labels = rng.integers(0, 2, 4000)
    write_text_samples(tmp_path / "s.txt", labels, users, items)
    assert (tmp_path / "s.txt").stat().st_size > 2 * (4 << 20)  # > 2 pyarrow blocks
    chunks = list(iter_text_chunks(tmp_path / "s.txt", chunk_bytes=8 << 20))
    assert len(chunks) == 2
    samples = read_text_samples(tmp_path / "s.txt")
    np.testing.assert_array_equal(samples.users, users.astype(np.float32))
    np.testing.assert_array_equal(samples.items, items.astype(np.float32))
    np.testing.assert_array_equal(samples.labels, labels)
    assert all(c.users.flags.c_contiguous and c.items.flags.c_contiguous for c in chunks)


def test_line_numbers_stay_right_across_chunks(tmp_path):
    lines = [line(i % 2, [i, i]) for i in range(1000)]
    lines[876] = "1,2,x\n"
    path = write_lines(tmp_path / "s.txt", lines)
    with pytest.raises(DataError) as error:
        list(iter_text_chunks(path, chunk_bytes=512))
    assert (error.value.line, error.value.column) == (877, 3)
    assert str(error.value) == f"{path}, line 877, column 3: 'x' is not a number"


@pytest.mark.parametrize(
    ("bad", "column", "reason"),
    [
        ("1,2,3\n", None, "expected 5 fields, found 3"),
        ("1,2,nan,3,4\n", 3, "not finite"),
        ("0,2,3,-inf,4\n", 4, "not finite"),
        ("2,1,1,1,1\n", 1, "label 2 is not 0 or 1"),
        ("\n", None, "expected 5 fields, found 1"),
        ("1,2,3,4,\n", 5, "'' is not a number"),
    ],
)
def test_bad_lines_are_reported_with_file_line_and_column(tmp_path, bad, column, reason):
    path = write_lines(tmp_path / "s.txt", [line(1, [1, 2, 3, 4]), bad, line(0, [1, 2, 3, 4])])
    with pytest.raises(DataError) as error:
        read_text_samples(path)
    assert error.value.path == str(path)
    assert error.value.line == 2
    assert error.value.column == column
    assert reason in str(error.value)


def test_skip_bad_lines_counts_and_names_the_first_few(tmp_path):
    lines = [line(1, [1, 2, 3, 4])] * 10
    lines[2], lines[7] = "1,a,3,4,5\n", "5,1,2,3,4\n"
    path = write_lines(tmp_path / "s.txt", lines)
    bad = BadLines()
    chunks = list(iter_text_chunks(path, skip_bad_lines=True, bad_lines=bad))
    assert sum(len(c) for c in chunks) == 8
    assert bad.count == 2
    assert [n for n, _ in bad.first] == [3, 8]
    assert "skipped 2 bad line(s)" in bad.summary(path)


def test_empty_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "s.txt", [])
    with pytest.raises(DataError, match="file is empty"):
        read_text_samples(path)


def test_last_line_without_newline_is_read(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1,1,2\n0,3,4")
    assert len(read_text_samples(path)) == 2


def test_odd_width_needs_user_dim(tmp_path):
    path = write_lines(tmp_path / "s.txt", [line(1, [1, 2, 3])])
    with pytest.raises(DataError, match="--user-dim"):
        read_text_samples(path)
    samples = read_text_samples(path, user_dim=1)
    assert samples.users.shape == (1, 1) and samples.items.shape == (1, 2)
