"""The binary snapshot: round trip, memory mapping, atomic saves through the file layer (crashes
and faults), and refusal of every damaged file."""

import contextlib
import json
import os
import struct
import zlib

import numpy as np
import pytest

from anning import CorruptSnapshot, Scope, SuppressionIndex, read_snapshot, write_snapshot
from anning.storage.snapshot import _HEADER, _SECTION, _SECTIONS, HEADER_SIZE
from anning.testing.crashio import CrashIO


@pytest.fixture(scope="module")
def small():
    return SuppressionIndex.build(
        ["13812345678", "13912345678", "13712345678", "+44 20 7946 0958"],
        ["京东", "entity:京东集团", "*", "shop"],
        ["marketing", "all", "notification", "marketing"],
        entities={"京东超市": "京东集团"},
        meta={"as_of": "2026-11-22T00:00:00+08:00"},
    )


@pytest.fixture()
def saved(small, tmp_path):
    path = tmp_path / "index.anx"
    write_snapshot(small, path)
    return path


def test_round_trip_answers_the_same(small, saved):
    loaded = read_snapshot(saved)
    assert len(loaded) == len(small)
    assert loaded.categories == small.categories
    assert loaded.meta["as_of"] == "2026-11-22T00:00:00+08:00"
    for arrays in zip(loaded.entries(), small.entries(), strict=True):
        assert np.array_equal(*arrays)
    assert loaded.check("京东", "13812345678") is Scope.SENDER
    assert loaded.check("京东超市", "13912345678") is Scope.ENTITY
    assert loaded.check("anyone", "13712345678", "notification") is Scope.GLOBAL
    assert loaded.check("shop", "00442079460958") is Scope.SENDER
    loaded.verify()


def test_load_maps_the_file_read_only(saved):
    loaded = read_snapshot(saved)
    words = loaded._core.words
    assert not words.flags.writeable
    assert not words.flags.owndata


def test_large_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    numbers = (8613000000000 + rng.integers(0, 10**9, 100_000)).astype(np.uint64)
    codes = rng.integers(0, 1000, 100_000).astype(np.uint32)
    idx = SuppressionIndex.build(numbers, codes, sender_table=[f"s{i}" for i in range(1000)])
    write_snapshot(idx, tmp_path / "big.anx")
    loaded = read_snapshot(tmp_path / "big.anx")
    sids = loaded.sender_ids([f"s{c}" for c in codes])
    assert (loaded.check_ids(sids, numbers) == 1).all()
    assert np.array_equal(loaded._core.bloom, idx._core.bloom)


def _bigger(small):
    numbers, scopes, masks = small.entries()
    return SuppressionIndex.build(
        np.concatenate([numbers, np.array([8613700000099], np.uint64)]),
        [small.scopes[s] for s in scopes] + ["new-shop"], np.concatenate([masks, [1]]))


def test_save_replaces_the_file_with_the_new_list(small, saved):
    write_snapshot(_bigger(small), saved)
    assert saved.read_bytes()[:HEADER_SIZE].startswith(b"ANNINGIX")
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary left
    loaded = read_snapshot(saved)
    assert len(loaded) == len(small) + 1
    assert loaded.check("new-shop", "13700000099") is Scope.SENDER


@pytest.mark.parametrize("fault", ["enospc", "fsync"])
def test_save_failure_leaves_the_old_file(small, saved, fault):
    """A save over the file that fails part-way (a full disk, a failed fsync) leaves the old
    file as it was, and no temporary file."""
    io = CrashIO()
    if fault == "enospc":
        io.enospc_after(HEADER_SIZE + 100, short=True)
    else:
        io.fail_fsync_next(1)
    before = saved.read_bytes()
    with pytest.raises(OSError):
        write_snapshot(_bigger(small), saved, io)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_a_crash_anywhere_in_a_save_leaves_one_whole_list(small, saved, tmp_path):
    """Power lost before any call of a save (through the crash-simulating file layer): after
    it, the path holds the old list or the new one, whole, never a mix or nothing."""
    new = _bigger(small)
    calls = CrashIO()
    write_snapshot(new, tmp_path / "count.anx", calls)
    original = saved.read_bytes()
    for at in range(calls.calls + 1):
        saved.write_bytes(original)
        io = CrashIO()
        io.arm(after=at)
        with contextlib.suppress(OSError):
            write_snapshot(new, saved, io)
        io.crash()
        assert len(read_snapshot(saved)) in (len(small), len(new)), at


def _refused(path, match=None):
    with pytest.raises(CorruptSnapshot) as info:
        read_snapshot(path)
    assert str(path) in str(info.value)
    if match:
        assert match in str(info.value)
    return str(info.value)


def test_every_truncation_is_refused(saved, tmp_path):
    data = saved.read_bytes()
    cut = tmp_path / "cut.anx"
    offsets = sorted({*range(0, 64), *range(0, len(data), 97), len(data) - 1,
                      HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1})
    for offset in offsets:
        cut.write_bytes(data[:offset])
        _refused(cut)


def test_a_byte_flipped_anywhere_is_refused(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "flipped.anx"
    bad.write_bytes(data)
    refused = 0
    with open(bad, "r+b", buffering=0) as f:
        for offset in range(len(data)):  # every byte: header, each section, each padding
            os.pwrite(f.fileno(), bytes([data[offset] ^ 0x5A]), offset)
            _refused(bad)
            os.pwrite(f.fileno(), data[offset:offset + 1], offset)
            refused += 1
    assert refused == len(data)
    assert read_snapshot(bad).check("京东", "13812345678") is Scope.SENDER


def test_single_bit_flips_in_each_section_are_refused(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "bit.anx"
    for i in range(len(_SECTIONS)):
        _name, offset, length, _crc = _SECTION.unpack_from(data, _HEADER.size + i * _SECTION.size)
        for pos in {offset, offset + max(length - 1, 0), offset + length // 2}:
            for bit in (0, 7):
                flipped = bytearray(data)
                flipped[pos] ^= 1 << bit
                bad.write_bytes(flipped)
                _refused(bad, "checksum mismatch")


def _reseal(data: bytearray) -> bytes:
    """Recompute every CRC, so that a deliberate change reaches the checks behind them."""
    size = len(data)
    spans = [_SECTION.unpack_from(data, _HEADER.size + i * _SECTION.size)
             for i in range(len(_SECTIONS))]
    for i, (name, offset, length, _crc) in enumerate(spans):
        end = spans[i + 1][1] if i + 1 < len(spans) else size
        struct.pack_into("<16sQQI4x", data, _HEADER.size + i * _SECTION.size, name, offset,
                         length, zlib.crc32(data[offset:end]))
    struct.pack_into("<I", data, 12, 0)
    struct.pack_into("<I", data, 12, zlib.crc32(bytes(data[:HEADER_SIZE])))
    return bytes(data)


def test_wrong_magic_version_and_size_are_named(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    bad = tmp_path / "bad.anx"
    wrong_magic = bytearray(data)
    wrong_magic[:8] = b"NOTANNIN"
    bad.write_bytes(_reseal(wrong_magic))
    _refused(bad, "not an anning snapshot")
    wrong_version = bytearray(data)
    struct.pack_into("<I", wrong_version, 8, 99)
    bad.write_bytes(_reseal(wrong_version))
    _refused(bad, "format version 99")
    bad.write_bytes(bytes(data) + b"\0" * 4096)
    _refused(bad, "truncated or extended")
    bad.write_bytes(b"")
    _refused(bad, "truncated: 0 bytes")
    _refused(tmp_path / "missing.anx", "cannot be read")
    _refused(tmp_path, "cannot be read")


def test_consistent_checksums_but_inconsistent_contents_are_refused(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    bad = tmp_path / "bad.anx"
    _name, meta_offset, meta_length, _ = _SECTION.unpack_from(
        data, _HEADER.size + (len(_SECTIONS) - 1) * _SECTION.size)  # the meta: last
    meta = json.loads(bytes(data[meta_offset:meta_offset + meta_length]))

    def with_meta(change):
        copy = bytearray(data)
        m = dict(meta)
        change(m)
        blob = json.dumps(m).encode()
        copy[meta_offset:meta_offset + meta_length] = blob.ljust(meta_length)[:meta_length]
        return _reseal(copy)

    bad.write_bytes(with_meta(lambda m: m.update(categories=["all"])))
    _refused(bad, "inconsistent contents")
    bad.write_bytes(with_meta(lambda m: m.update(scopes=["x", *m["scopes"][1:]])))
    _refused(bad, "inconsistent contents")
    bad.write_bytes(with_meta(lambda m: m.update(senders=m["senders"][::-1])))
    _refused(bad, "inconsistent contents")
    # Entries count in the header that disagrees with the words section.
    wrong_count = bytearray(data)
    struct.pack_into("<Q", wrong_count, 24, 3)
    bad.write_bytes(_reseal(wrong_count))
    _refused(bad, "inconsistent contents")
    # A directory that does not match the entries.
    directory = bytearray(data)
    _, d_offset, _, _ = _SECTION.unpack_from(directory, _HEADER.size)
    struct.pack_into("<I", directory, d_offset, 1)
    bad.write_bytes(_reseal(directory))
    _refused(bad, "inconsistent contents")


def test_refused_file_leaves_nothing_mapped(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    data[-1] ^= 1
    bad = tmp_path / "bad.anx"
    bad.write_bytes(data)
    for _ in range(50):
        _refused(bad)
    with open("/proc/self/maps", encoding="utf-8") as maps:
        assert str(bad) not in maps.read()  # unmapped at once, not left to the collector


def test_temporaries_of_dead_writers_are_removed(small, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".index.anx.tmp{dead}"
    stale.write_bytes(b"x" * 100)
    alive = tmp_path / f".index.anx.tmp{os.getpid()}x"  # not a pid: left alone
    alive.write_bytes(b"y")
    write_snapshot(small, tmp_path / "index.anx")
    assert not stale.exists()
    assert alive.exists()
