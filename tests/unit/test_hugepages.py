"""The index's randomly probed arrays on transparent huge pages (anning.hugepages)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from anning import SuppressionIndex, read_snapshot, write_snapshot
from anning.index import hugepages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_on() -> bool:
    return THP.exists() and "[never]" not in THP.read_text()


def _vma_flags(address: int) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping holding `address`."""
    fields: dict[str, str] = {}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            inside = int(m.group(1), 16) <= address < int(m.group(2), 16)
        elif inside and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32, np.uint8])
def test_zeros_is_a_zeroed_writable_aligned_array(dtype):
    n = (hugepages.SMALLEST // np.dtype(dtype).itemsize) + 12345
    a = hugepages.zeros(n, dtype)
    assert a.dtype == dtype and a.shape == (n,) and a.flags.writeable
    assert not a.any()
    assert a.ctypes.data % hugepages.HUGE_PAGE == 0
    a[:] = 7
    a[-1] = 9
    assert int(a.sum()) == 7 * (n - 1) + 9


def test_small_arrays_stay_ordinary():
    a = hugepages.zeros(1000, np.uint32)
    assert a.shape == (1000,) and not a.any() and a.flags.owndata
    b = np.arange(10, dtype=np.uint64)
    assert hugepages.copy(b) is b


def test_without_huge_pages_copy_leaves_the_array_alone(monkeypatch):
    monkeypatch.setattr(hugepages, "_ADVICE", None)
    big = np.ones(hugepages.SMALLEST // 8 + 1, np.uint64)
    assert hugepages.copy(big) is big
    plain = hugepages.zeros(len(big), np.uint64)
    assert plain.flags.owndata and not plain.any()


def test_copy_keeps_the_values():
    src = np.random.default_rng(3).integers(0, 1 << 63, hugepages.SMALLEST // 8 + 99,
                                            dtype=np.uint64)
    out = hugepages.copy(src)
    assert out is not src and np.array_equal(out, src)
    assert out.ctypes.data % hugepages.HUGE_PAGE == 0


@pytest.mark.skipif(not Path("/proc/self/smaps").exists() or not _thp_on(),
                    reason="no transparent huge pages here")
def test_built_and_loaded_indexes_probe_huge_page_memory(tmp_path):
    rng = np.random.default_rng(5)
    numbers = np.unique(rng.integers(13_000_000_000, 13_999_999_999, 3_000_000,
                                     dtype=np.uint64))
    idx = SuppressionIndex.build(numbers, ["*"] * len(numbers))
    write_snapshot(idx, tmp_path / "i.anx")
    loaded = read_snapshot(tmp_path / "i.anx")
    for index in (idx, loaded):
        bloom = index._core.bloom
        assert bloom.nbytes >= hugepages.SMALLEST
        assert _vma_flags(bloom.ctypes.data).get("THPeligible") == "1"
    probe = numbers[::1000]
    assert loaded.check_ids(loaded.sender_ids(["s"] * len(probe)), probe).min() == 3
