"""SuppressionIndex: the three-level check of SPEC §2, its API and its bad-input errors."""

import numpy as np
import pytest

import anning
from anning import InvalidInput, Scope, SuppressionIndex

JD = "【京东】"


@pytest.fixture(scope="module")
def idx():
    return SuppressionIndex.build(
        ["13812345678", "13912345678", "13712345678", "13612345678", "+44 20 7946 0958",
         "13512345678", "13512345678"],
        [JD, "entity:京东集团", "*", "其他", "*", "[Shop]", "[Shop]"],
        ["marketing", "all", "notification", "marketing", "all", "marketing", "notification"],
        entities={"京东": "京东集团", "京东超市": "京东集团"},
    )


def test_sender_scope_matches_its_sender_only(idx):
    assert idx.check("京东", "13812345678") is Scope.SENDER
    assert idx.check(" 【京东】 ", "+86 138-1234-5678") is Scope.SENDER
    assert idx.check("京东超市", "13812345678") is Scope.NONE
    assert idx.check("京东", "13812345678", "notification") is Scope.NONE


def test_entity_scope_covers_every_sender_of_the_entity(idx):
    for sender in ("京东", "京东超市", "【京东超市】"):
        assert idx.check(sender, "13912345678") is Scope.ENTITY
        assert idx.check(sender, "13912345678", "notification") is Scope.ENTITY
    assert idx.check("其他", "13912345678") is Scope.NONE


def test_global_scope_covers_every_sender_even_unknown_ones(idx):
    assert idx.check("从未见过", "13712345678", "notification") is Scope.GLOBAL
    assert idx.check("京东", "13712345678", "notification") is Scope.GLOBAL
    assert idx.check("从未见过", "13712345678", "marketing") is Scope.NONE
    assert idx.check("x", "00442079460958") is Scope.GLOBAL


def test_most_specific_scope_wins():
    idx = SuppressionIndex.build(
        ["13800000001"] * 3, ["*", "entity:E", "s"], "all", entities={"s": "E"}
    )
    assert idx.check("s", "13800000001") is Scope.SENDER
    assert idx.check("t", "13800000001") is Scope.GLOBAL
    idx2 = SuppressionIndex.build(["13800000001"] * 2, ["*", "entity:E"], entities={"s": "E"})
    assert idx2.check("s", "13800000001") is Scope.ENTITY


def test_duplicate_entries_fold_their_categories(idx):
    assert len(idx) == 6
    assert idx.check("shop", "13512345678") is Scope.SENDER
    assert idx.check("shop", "13512345678", "notification") is Scope.SENDER
    assert idx.mask("13512345678", "[SHOP]") == 0b11


def test_scope_is_truthy_only_when_suppressed(idx):
    assert idx.check("京东", "13812345678")
    assert not idx.check("京东", "13000000000")
    assert Scope.NONE == 0 and int(Scope.GLOBAL) == 3


def test_empty_category_means_marketing(idx):
    assert idx.check("京东", "13812345678", "") is Scope.SENDER
    assert idx.check("京东", "13812345678", " Marketing ") is Scope.SENDER


def test_bad_inputs_raise_naming_field_and_value(idx):
    with pytest.raises(InvalidInput, match=r"number: '138abc'"):
        idx.check("京东", "138abc")
    with pytest.raises(InvalidInput, match=r"sender: '\\x00'"):
        idx.check("\x00", "13812345678")
    with pytest.raises(InvalidInput, match=r"category: 'spam' is not one of"):
        idx.check("京东", "13812345678", "spam")
    with pytest.raises(InvalidInput, match=r"sender: ''"):
        idx.check("", "13812345678")
    with pytest.raises(InvalidInput, match="sender: None is not text"):
        idx.check(None, "13812345678")


def test_check_ids_is_the_batch_of_check(idx):
    senders = ["京东", "京东超市", "nobody", "其他", "京东"] * 20
    numbers = ["13812345678", "13912345678", "13712345678", "13612345678", "13000000000"] * 20
    sids = idx.sender_ids(senders)
    assert sids.dtype == np.uint32
    assert sids[2] == anning.UNKNOWN_SENDER
    nums = anning.normalize_numbers(numbers)
    for category in ("marketing", "notification"):
        codes = idx.check_ids(sids, nums, category)
        assert codes.dtype == np.uint8
        expected = [idx.check(s, n, category) for s, n in zip(senders, numbers, strict=True)]
        assert codes.tolist() == [int(e) for e in expected]
    assert idx.check_batch(senders, numbers).tolist() == idx.check_ids(sids, nums).tolist()


def test_check_ids_rejects_bad_ids_and_numbers(idx):
    with pytest.raises(InvalidInput, match=r"numbers\[1\]: 0 is not an E.164 number"):
        idx.check_ids([0, 0], [8613812345678, 0])
    with pytest.raises(InvalidInput, match=r"numbers\[0\]: 10000000000000000"):
        idx.check_ids([0], [10**16])
    with pytest.raises(InvalidInput, match=r"sender_ids\[0\]: 99999 is not a sender id"):
        idx.check_ids([99999], [8613812345678])
    with pytest.raises(InvalidInput, match="sender_ids has 1 items, numbers 2"):
        idx.check_ids([0], [8613812345678, 8613812345678])
    with pytest.raises(InvalidInput, match=r"senders\[1\]"):
        idx.sender_ids(["ok", "\x07"])
    assert idx.check_ids([], []).tolist() == []


def test_build_rejects_garbage_naming_the_item():
    with pytest.raises(InvalidInput, match=r"numbers\[1\]: 'abc'"):
        SuppressionIndex.build(["13812345678", "abc"], ["a", "b"])
    with pytest.raises(InvalidInput, match=r"senders: '\\x01'"):
        SuppressionIndex.build(["13812345678"], ["\x01"])
    with pytest.raises(InvalidInput, match=r"categories\[0\]: 'spam'"):
        SuppressionIndex.build(["13812345678"], ["a"], ["spam"])
    with pytest.raises(InvalidInput, match=r"numbers\[0\]: 13812345678000 is not an E.164 number"):
        SuppressionIndex.build(np.array([13812345678 * 10**3], np.uint64), ["a"])
    with pytest.raises(InvalidInput, match=r"numbers\[0\]: -1"):
        SuppressionIndex.build(np.array([-1]), ["a"])
    with pytest.raises(InvalidInput, match="senders: 1 values for 2 numbers"):
        SuppressionIndex.build(["13812345678", "13912345678"], ["a"])
    with pytest.raises(InvalidInput, match="senders: one string given"):
        SuppressionIndex.build(["13812345678"], "a")
    with pytest.raises(InvalidInput, match=r"senders\[0\]: 5 is not a code"):
        SuppressionIndex.build(np.array([8613812345678], np.uint64), np.array([5]),
                               sender_table=["a"])
    with pytest.raises(InvalidInput, match=r"categories\[0\]: 0 is not a category mask"):
        SuppressionIndex.build(["13812345678"], ["a"], np.array([0]))
    with pytest.raises(InvalidInput, match="categories: 'all' is not a category name"):
        SuppressionIndex.build(["13812345678"], ["a"], category_names=["all"])
    with pytest.raises(InvalidInput, match="categories: 9 names"):
        SuppressionIndex.build(["13812345678"], ["a"], category_names=[f"c{i}" for i in range(9)])
    with pytest.raises(InvalidInput, match="entities"):
        SuppressionIndex.build(["13812345678"], ["a"], entities={"a": ""})


def test_fast_path_arrays_and_sender_table():
    numbers = np.array([8613812345678, 8613912345678, 8613812345678], np.uint64)
    idx = SuppressionIndex.build(
        numbers, np.array([0, 1, 2], np.uint32), np.array([1, 2, 0xFF], np.uint8),
        sender_table=["a", "entity:E", "*"], entities={"b": "E"},
    )
    assert idx.check("a", 8613812345678) is Scope.SENDER
    assert idx.check("b", "13912345678", "notification") is Scope.ENTITY
    assert idx.check("b", "13912345678", "marketing") is Scope.NONE
    assert idx.check("zz", 8613812345678, "notification") is Scope.GLOBAL
    assert idx.entities() == {"b": "e"}


def test_configured_categories():
    idx = SuppressionIndex.build(
        ["13812345678"], ["a"], ["otp"],
        category_names=["marketing", "otp", "survey", "notification"]
    )
    assert idx.check("a", "13812345678", "otp") is Scope.SENDER
    assert idx.check("a", "13812345678", "survey") is Scope.NONE
    assert idx.categories == ("marketing", "otp", "survey", "notification")


def test_the_default_category_is_marketing_wherever_it_stands():
    """One rule (SPEC §1): an empty category is marketing, in checks and writes alike, and a
    category list without marketing or notification is refused where it is taken in."""
    idx = SuppressionIndex.build(["13812345678", "13912345678"], ["a", "a"],
                                 ["marketing", "notification"],
                                 category_names=["notification", "otp", "marketing"])
    assert idx.check("a", "13812345678", "") is Scope.SENDER
    assert idx.check("a", "13912345678", "") is Scope.NONE
    assert idx.check("a", "13912345678", "notification") is Scope.SENDER
    from anning.engine import Engine

    engine = Engine(idx)
    assert engine.make_event("13712345678", "a", "", 1, None, "api").mask == 1 << 2
    assert engine.read_reply("a", "13712345678", "TD").event.mask == 1 << 2
    for names in (["notification", "otp"], ["marketing"], ["otp", "survey"]):
        with pytest.raises(InvalidInput, match="lacks"):
            SuppressionIndex.build(["13812345678"], ["a"], category_names=names)


def test_entries_round_trip_to_numbers_and_scopes(idx):
    numbers, scopes, masks = idx.entries()
    got = {(int(n), idx.scopes[s], int(m)) for n, s, m in zip(numbers, scopes, masks, strict=True)}
    assert (8613812345678, "【京东】".strip("【】"), 1) in got
    assert (8613912345678, "entity:京东集团", 0xFF) in got
    assert (442079460958, "*", 0xFF) in got
    assert len(got) == len(idx)


def test_empty_index_answers_none():
    idx = SuppressionIndex.build([], [])
    assert len(idx) == 0
    assert idx.check("a", "13812345678") is Scope.NONE
    idx.verify()


def test_memory_is_accounted(idx):
    assert idx.nbytes >= idx._core.words.nbytes + idx._core.bloom.nbytes
    assert "entries" in repr(idx)


def test_many_scopes_on_one_number_use_the_search_path():
    senders = [f"s{i}" for i in range(300)]
    idx = SuppressionIndex.build(["13812345678"] * 300 + ["13812345678"], [*senders, "*"],
                                 ["marketing"] * 300 + ["notification"])
    assert len(idx) == 301
    for i in (0, 17, 150, 299):
        assert idx.check(f"s{i}", "13812345678") is Scope.SENDER
    assert idx.check("s5", "13812345678", "notification") is Scope.GLOBAL
    assert idx.check("new", "13812345678") is Scope.NONE
    assert idx.check("s5", "13812345679") is Scope.NONE
    idx.verify()


def test_large_random_index_has_no_false_negatives_or_positives():
    rng = np.random.default_rng(7)
    n = 200_000
    numbers = (8613000000000 + rng.integers(0, 10**9, n)).astype(np.uint64)
    codes = rng.integers(0, 3000, n).astype(np.uint32)
    table = [f"sender{i}" for i in range(2999)] + ["*"]
    idx = SuppressionIndex.build(numbers, codes, sender_table=table)
    idx.verify()
    sids = idx.sender_ids([table[c] if table[c] != "*" else "nobody" for c in codes])
    assert (idx.check_ids(sids, numbers) > 0).all()
    present = set(zip(numbers.tolist(), codes.tolist(), strict=True))
    global_numbers = {num for num, c in present if c == 2999}
    probe = (8613000000000 + rng.integers(0, 10**9, n)).astype(np.uint64)
    probe[::10] = numbers[::10]  # some present, for sender0 or another sender
    got = idx.check_ids(np.full(n, idx.sender_ids(["sender0"])[0], np.uint32), probe)
    expected = [
        1 if (num, 0) in present else (3 if num in global_numbers else 0)
        for num in probe.tolist()
    ]
    assert got.tolist() == expected


def test_every_input_entry_is_covered():
    rng = np.random.default_rng(11)
    numbers = (8613000000000 + rng.integers(0, 10**6, 50_000)).astype(np.uint64)
    codes = rng.integers(0, 40, 50_000).astype(np.uint32)
    masks = rng.integers(1, 256, 50_000).astype(np.uint8)
    table = [f"s{i}" for i in range(38)] + ["entity:e", "*"]
    idx = SuppressionIndex.build(numbers, codes, masks, sender_table=table)
    scope_ids = np.array([idx.scopes.index(t) for t in table], np.uint32)
    assert idx._core.first_missing(numbers, scope_ids[codes], masks) == -1
    # A mask bit the index does not have is reported.
    # (the first entry whose folded mask lacks a bit: widening it must be caught there)
    stored = [idx.mask(int(numbers[i]), table[codes[i]]) for i in range(200)]
    position = next(i for i, m in enumerate(stored) if m != 0xFF)
    wider = masks.copy()
    wider[position] = 0xFF
    assert idx._core.first_missing(numbers, scope_ids[codes], wider) == position


def _corrupted(idx, change):
    """A copy of idx's arrays with one invariant broken by `change`, as a raw core."""
    from anning import _index

    core = idx._core
    arrays = {name: np.array(getattr(core, name)) for name in
              ("directory", "words", "bloom", "sender_scope", "sender_entity")}
    change(arrays)
    return _index.IndexCore(arrays["directory"], arrays["words"], arrays["bloom"],
                            arrays["sender_scope"], arrays["sender_entity"],
                            core.remainder_bits, core.scope_bits, core.bloom_k)


def test_verify_names_each_broken_invariant():
    rng = np.random.default_rng(2)
    numbers = np.repeat((8613000000000 + rng.integers(0, 10**9, 500)).astype(np.uint64), 3)
    codes = np.tile(np.array([0, 1, 2], np.uint32), 500)
    idx = SuppressionIndex.build(numbers, codes, sender_table=["a", "b", "*"])
    idx.verify()
    scopes = len(idx.scopes)
    bucket = int(np.argmax(np.diff(idx._core.directory.astype(np.int64)) >= 2))
    first = int(idx._core.directory[bucket])

    def swap(a):
        a["words"][[first, first + 1]] = a["words"][[first + 1, first]]

    def duplicate(a):
        a["words"][first + 1] = a["words"][first]

    def empty_mask(a):
        a["words"][first] &= ~np.uint64(0xFF)

    def clear_bloom(a):
        a["bloom"][:] = 0

    def scope_out_of_range(a):
        a["sender_scope"][0] = 99

    unsorted = ("not strictly sorted", "lookup misses")  # whichever the scan meets first
    cases = {swap: unsorted, duplicate: unsorted, empty_mask: ("empty category mask",),
             clear_bloom: ("Bloom filter misses",),
             scope_out_of_range: ("sender table points outside",)}
    for change, messages in cases.items():
        problem = _corrupted(idx, change).verify(scopes)
        assert problem and any(m in problem for m in messages), (change.__name__, problem)


@pytest.mark.parametrize("timed", [False, True])
def test_a_build_of_kept_rows_and_more_is_the_build_of_them_together(timed):
    """_index.build(keep=, more=) - a folding load's rows and its resolved entries, without a
    copy - makes the very arrays of the same entries given as one set of columns."""
    from anning import _index

    rng = np.random.default_rng(3)
    n = 20_000
    numbers = 8613800000000 + rng.integers(0, 5_000, n).astype(np.uint64)
    scopes = rng.integers(0, 30, n).astype(np.uint32)
    masks = rng.integers(1, 4, n).astype(np.uint8)
    times = rng.integers(0, 50, n).astype(np.int64) if timed else None
    keep = rng.random(n) < 0.9
    m = 3_000
    more = [8613900000000 + rng.integers(0, 2_000, m).astype(np.uint64),
            rng.integers(0, 30, m).astype(np.uint32), rng.integers(1, 4, m).astype(np.uint8)]
    if timed:
        more.append(rng.integers(0, 50, m).astype(np.int64))
    parts = _index.build(numbers, scopes, masks, 5, times=times, keep=keep.view(np.uint8),
                         more=tuple(more))
    whole = _index.build(*(np.concatenate([c[keep], x]) for c, x in zip(
        (numbers, scopes, masks), more, strict=False)), 5,
        times=np.concatenate([times[keep], more[3]]) if timed else None)
    assert parts.keys() == whole.keys()
    for name, value in whole.items():
        assert np.array_equal(parts[name], value), name
    with pytest.raises(ValueError, match=r"more: masks\[2\]: 0 is an empty category mask"):
        _index.build(numbers, scopes, masks, 5, times=times, more=(
            more[0][:3], more[1][:3], np.array([1, 1, 0], np.uint8),
            *(t[:3] for t in more[3:])))
    with pytest.raises(ValueError, match="keep: 5 for 20000 entries"):
        _index.build(numbers, scopes, masks, 5, keep=np.ones(5, np.uint8))
    with pytest.raises(ValueError, match="more: 2 columns, not numbers, scopes, masks"):
        _index.build(numbers, scopes, masks, 5, more=tuple(more[:2]))
    with pytest.raises(ValueError, match="more: times: none, where the other entries have"):
        _index.build(numbers, scopes, masks, 5, times=np.zeros(n, np.int64), more=tuple(
            more[:3]))
