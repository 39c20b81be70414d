"""One index shared by 8 threads: batch checks release the GIL and see one immutable list."""

import threading

import numpy as np

from anning import SuppressionIndex


def test_eight_threads_share_one_index():
    rng = np.random.default_rng(3)
    n = 300_000
    numbers = (8613000000000 + rng.integers(0, 10**9, n)).astype(np.uint64)
    table = [f"s{i}" for i in range(500)] + ["entity:e0", "*"]
    codes = rng.integers(0, len(table), n).astype(np.uint32)
    idx = SuppressionIndex.build(numbers, codes, sender_table=table,
                                 entities={f"s{i}": "e0" for i in range(0, 500, 7)})
    queries = numbers.copy()
    queries[::3] = (8613000000000 + rng.integers(0, 10**9, len(queries[::3]))).astype(np.uint64)
    names = [f"s{i}" for i in rng.integers(0, 600, n)]
    sids = idx.sender_ids(names)
    expected = idx.check_ids(sids, queries)
    assert 0 < (expected > 0).sum() < n
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for round_ in range(6):
                lo = (k * 37_000 + round_ * 11_000) % (n - 50_000)
                got = idx.check_ids(sids[lo:lo + 50_000], queries[lo:lo + 50_000])
                assert np.array_equal(got, expected[lo:lo + 50_000])
                for i in range(lo, lo + 300):  # the scalar path, with its normalisation
                    assert idx.check(names[i], str(int(queries[i]) - 86 * 10**11)) == expected[i]
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
