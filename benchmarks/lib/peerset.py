"""The membership peers of the report's core figures, each answering "is this number listed"
over the same numbers: numpy `searchsorted` (the exact floor), a Python set, the rbloom Bloom
filter from PyPI (1% false positives), and Redis (a set, SMISMEMBER in pipelined batches) when
`redis-server` and the redis client are installed. Each is checked against `searchsorted`: no
false negative anywhere, no false positive but the Bloom filter's."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from anning.testing.server import free_port
from benchmarks.lib.figures import Figures
from benchmarks.lib.peers import searchsorted_member

__all__ = ["MembershipPeers"]

REDIS_BATCH = 10_000  # numbers an SMISMEMBER
BLOOM_ERROR = 0.01


def _best(fn: Any, rounds: int = 3) -> tuple[float, Any]:
    result = fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


class MembershipPeers:
    def __init__(self, numbers: np.ndarray, redis: bool = True) -> None:
        self.sorted = np.sort(numbers)
        self.n = len(numbers)
        self.set = set(numbers.tolist())
        self.bloom: Any = None
        with contextlib.suppress(ImportError):
            from rbloom import Bloom

            self.bloom = Bloom(max(self.n, 1), BLOOM_ERROR)
            self.bloom.update(numbers.tolist())
        self.redis: Any = None
        self.redis_bytes = 0.0
        self._server: subprocess.Popen[bytes] | None = None
        if redis:
            self._start_redis(numbers)

    def _start_redis(self, numbers: np.ndarray) -> None:
        tool = shutil.which("redis-server")
        try:
            import redis
        except ImportError:
            return
        if tool is None:
            return
        port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="anning-redis-")
        self._server = subprocess.Popen(
            [tool, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        before = client.info("memory")["used_memory"]
        pipe = client.pipeline(transaction=False)
        for start in range(0, len(numbers), 100_000):
            pipe.sadd("listed", *numbers[start:start + 100_000].tolist())
            if start % 1_000_000 == 0:
                pipe.execute()
        pipe.execute()
        self.redis_bytes = (client.info("memory")["used_memory"] - before) / max(self.n, 1)
        self.redis = client

    def searchsorted(self, numbers: np.ndarray) -> np.ndarray:
        return searchsorted_member(self.sorted, numbers)

    def ns_per_check(self, numbers: np.ndarray, sample: int, member: np.ndarray,
                     figures: Figures) -> dict[str, float]:
        """Each peer's ns per membership check (numpy over all `numbers`, the per-item peers
        over `sample` of them), checked against `member`."""
        out: dict[str, float] = {}
        seconds, got = _best(lambda: self.searchsorted(numbers))
        out["numpy searchsorted"] = seconds / len(numbers) * 1e9
        few = numbers[:sample].tolist()
        want = member[:sample]
        lookup = self.set
        seconds, got = _best(lambda: [x in lookup for x in few])
        if not np.array_equal(np.array(got), want):
            figures.fail("the Python set disagrees with searchsorted")
        out["Python set"] = seconds / len(few) * 1e9
        if self.bloom is not None:
            bloom = self.bloom
            seconds, got = _best(lambda: [x in bloom for x in few])
            got = np.array(got)
            false_positive = float(np.mean(got[~want])) if (~want).any() else 0.0
            if not got[want].all() or false_positive > 3 * BLOOM_ERROR:
                figures.fail(f"rbloom: false negatives or {false_positive:.1%} false positives")
            out["rbloom (Bloom filter, 1%)"] = seconds / len(few) * 1e9
        if self.redis is not None:
            client = self.redis

            def ask() -> list[int]:
                answers: list[int] = []
                for start in range(0, len(few), REDIS_BATCH):
                    answers += client.smismember("listed", few[start:start + REDIS_BATCH])
                return answers

            seconds, got = _best(ask, rounds=1)
            if not np.array_equal(np.array(got, dtype=bool), want):
                figures.fail("Redis disagrees with searchsorted")
            out[f"Redis (SMISMEMBER x{REDIS_BATCH:,})"] = seconds / len(few) * 1e9
        return out

    def bytes_per_entry(self) -> dict[str, float]:
        out = {"numpy sorted uint64": 8.0,
               "Python set": (sys.getsizeof(self.set) + sum(map(sys.getsizeof, self.set)))
               / max(self.n, 1)}
        if self.bloom is not None:
            out["rbloom (Bloom filter, 1%)"] = self.bloom.size_in_bits / 8 / max(self.n, 1)
        if self.redis is not None:
            out["Redis set"] = self.redis_bytes
        return out

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        if self._server is not None:
            self._server.terminate()
            self._server.wait(30)
            self._dir.cleanup()
