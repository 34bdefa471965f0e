"""Presence filters never rule out a file holding a value, rule out nearly every file
lacking it, and a file without one yet is always read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vigil.detect import presence
from vigil.detect.presence import Presence, bloom, may_contain, value_hashes


def ids(prefix: str, n: int, seed: int = 0) -> pa.Array:
    picks = np.random.default_rng(seed).integers(0, 10 * n, n)
    return pa.array([f"{prefix}{i}" for i in picks])


def test_hashes_are_the_same_for_equal_strings_however_they_are_stored() -> None:
    plain = pa.array(["u1", "", "ü7", None, "u1", "a" * 300])
    sliced = pa.array(["x", "u1", "", "ü7", None, "u1", "a" * 300]).slice(1)
    chunked = pa.chunked_array([plain.slice(0, 2), plain.slice(2)])
    expected = value_hashes(plain)
    assert len(expected) == 5  # the null dropped
    assert expected[0] == expected[3] and len(set(expected.tolist())) == 4
    for same in (sliced, chunked, plain.dictionary_encode(), plain.cast(pa.large_string())):
        np.testing.assert_array_equal(value_hashes(same), expected)
    many = value_hashes(pa.array([f"u{i:07d}" for i in range(200_000)]))
    assert len(np.unique(many)) == 200_000


@pytest.mark.parametrize("seed", range(5))
def test_a_filter_holds_every_value_of_its_file_and_few_others(seed: int) -> None:
    values = ids("u", 5_000, seed)
    filters = [bloom(values)]
    assert may_contain(filters, values).all()
    assert all(may_contain(filters, values.slice(i, 1))[0] for i in range(0, 5_000, 7))
    absent = ids("x", 500, seed)
    false_share = np.mean([may_contain(filters, absent.slice(i, 1))[0] for i in range(500)])
    assert false_share < 0.02


def test_many_filters_of_several_sizes_are_probed_alike() -> None:
    files = [ids("u", n, seed) for seed, n in enumerate((10, 500, 3_000, 9_000, 10))]
    filters = [bloom(v) for v in files]
    assert len({len(f) for f in filters}) > 2
    for i, values in enumerate(files):
        wanted = values.slice(len(values) // 2, 1)
        hit = may_contain(filters, wanted)
        assert hit[i]
        assert hit.sum() <= 2  # its own file, at most one false "may hold"
    assert not may_contain(filters, pa.array([], pa.string())).any()


def test_files_without_a_filter_are_always_read_and_refreshes_fill_newest_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence, "REFRESH_LIMIT", 3)
    contents = {f"f{i}": ids("u", 100, i) for i in range(5)}
    last_event = {name: 1_000 * i for i, name in enumerate(contents)}
    index = Presence(tmp_path / "presence.sqlite3", "file:///lake")
    wanted = contents["f0"].slice(0, 1)
    assert index.may_hold("logs", "user_id", set(contents), wanted) == set(contents)

    read: list[str] = []

    def column(name: str) -> pa.Array:
        read.append(name)
        return contents[name]

    assert index.refresh("logs", "user_id", last_event, column, 0) == 3
    assert read == ["f4", "f3", "f2"]  # newest first
    # f0 and f1 have no filter yet, so they stay; of f2-f4, only one holding it could.
    held = index.may_hold("logs", "user_id", set(contents), wanted)
    assert {"f0", "f1"} <= held and len(held) <= 3
    assert index.refresh("logs", "user_id", last_event, contents.__getitem__, 0) == 2
    assert index.may_hold("logs", "user_id", set(contents), wanted) == {"f0"}
    # Another column, topic or lake has filters of its own.
    assert index.may_hold("logs", "service", set(contents), wanted) == set(contents)
    other = Presence(tmp_path / "presence.sqlite3", "file:///elsewhere")
    assert other.may_hold("logs", "user_id", set(contents), wanted) == set(contents)
    # Filters of files ending before `forget_before` are dropped; the file is read again.
    assert index.refresh("logs", "user_id", {}, contents.__getitem__, 2_500) == 0
    assert index.may_hold("logs", "user_id", set(contents), wanted) == {"f0", "f1", "f2"}


def test_a_corrupt_index_reads_every_file_and_is_rebuilt(tmp_path: Path) -> None:
    contents = {f"f{i}": ids("u", 100, i) for i in range(3)}
    path = tmp_path / "presence.sqlite3"
    path.write_bytes(b"not a database, a disk fault's leftovers" * 100)
    index = Presence(path, "file:///lake")
    wanted = contents["f1"].slice(0, 1)
    assert index.may_hold("logs", "user_id", set(contents), wanted) == set(contents)
    assert index.failure is not None and "presence.sqlite3" in index.failure
    assert not path.exists()  # removed, to be rebuilt
    assert index.refresh("logs", "user_id", dict.fromkeys(contents, 1), contents.__getitem__,
                         0) == 3
    assert index.may_hold("logs", "user_id", set(contents), wanted) == {"f1"}
