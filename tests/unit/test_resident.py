"""What a loaded snapshot really costs: resident memory after every page is touched, in a fresh
process (anning.testing.memory), against what `nbytes` says.

The Bloom filter and directory used to be read through the file mapping by the checksum pass and
then copied onto huge pages, both copies resident (1.34x nbytes at 10M entries); now they are
read straight into their copies, and with transparent huge pages set to `never` they are served
from the file, not copied at all."""

from __future__ import annotations

import numpy as np
import pytest

from anning import SuppressionIndex, write_snapshot
from anning.index import hugepages
from anning.testing.memory import touched_rss

SLACK = 4 << 20  # the interpreter's own growth: the meta's parse, thread stacks, arenas
ENTRIES = 3_000_000  # a Bloom filter of 4.5 MB: past hugepages.SMALLEST, so it is copied


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    rng = np.random.default_rng(17)
    numbers = np.unique(8613000000000 + rng.integers(0, 999_999_999, ENTRIES, dtype=np.uint64))
    senders = [f"shop{i}" for i in range(2000)] + ["*"]
    scopes = [senders[i] for i in rng.integers(0, len(senders), len(numbers)).tolist()]
    index = SuppressionIndex.build(numbers, scopes)
    assert index._core.bloom.nbytes >= hugepages.SMALLEST
    path = tmp_path_factory.mktemp("resident") / "index.anx"
    write_snapshot(index, path)
    return path


def test_touched_memory_is_what_nbytes_says(snapshot):
    r = touched_rss(snapshot)
    assert r.rss <= 1.05 * r.nbytes + SLACK, r
    assert r.rss >= 0.9 * r.nbytes, r  # every page was touched: the measure measures
    if hugepages.enabled():
        assert r.copied == ["bloom", "directory"] or r.copied == ["bloom"], r
        # the copies are the only anonymous memory of size: the entries are file pages
        assert r.file >= r.nbytes * 0.6 and r.anon <= r.nbytes * 0.4, r


def test_without_huge_pages_the_file_mapping_is_served(snapshot, tmp_path):
    never = tmp_path / "enabled"
    never.write_text("always madvise [never]\n")
    r = touched_rss(snapshot, thp_enabled=never)
    assert r.copied == [], r
    assert r.huge == 0, r
    assert r.rss <= 1.05 * r.nbytes + SLACK, r
    assert r.anon <= SLACK + r.nbytes * 0.05, r  # nothing of the index copied


def test_enabled_reads_the_kernel_setting(tmp_path, monkeypatch):
    setting = tmp_path / "enabled"
    monkeypatch.setattr(hugepages, "THP_ENABLED", setting)
    for text, expected in (("[always] madvise never", True), ("always [madvise] never", True),
                           ("always madvise [never]", False)):
        setting.write_text(text + "\n")
        assert hugepages.enabled() is (expected and hugepages._ADVICE is not None)
        big = np.ones(hugepages.SMALLEST // 8 + 1, np.uint64)
        assert (hugepages.copy(big) is big) is not hugepages.enabled()
    setting.unlink()  # a kernel without transparent huge pages
    assert not hugepages.enabled()
