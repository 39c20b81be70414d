"""Synthetic but realistic suppression lists for the benchmarks (a module and a script).

    python -m benchmarks.lib.datagen --entries 1000000 --queries 1000000 --out /tmp/anning-data

What is generated (all from one fixed seed, with vectorised numpy: no Python loop per entry,
so 500,000,000 entries take minutes and only the output arrays' memory):

- a sender universe: `senders` names (default 50,000) mixing Chinese signatures (`京东商城`),
  106 ports (`1069012345`) and account ids (`sp204817`); `entity_share` of them (20%) grouped
  into `n_entities` entities (5,000), a few senders each;
- entries (number, scope code, category mask): senders drawn from a Zipf-like law (a few
  platforms hold most opt-outs); for a sender that belongs to an entity about half of its
  opt-outs are entity-scoped (a reply opts out of the whole merchant, SPEC §4); 1% are global
  (`*`); a quarter of the entries reuse a number seen nearby (one person opting out of several
  senders); numbers are Chinese mobiles 86 + 1[3-9]x + 8 digits over real prefixes; masks are
  mostly marketing (bit 0), some notification (bit 1), some all (0xFF);
- queries (sender, number): 10% taken from the entries (for an entity entry, a sender of that
  entity; for a global one, any sender), 90% random numbers with Zipf senders; 1% of queries
  carry a sender the list has never seen;
- events (`generate_events`): real-time opt-outs, opt-ins and reassignments drawn as entries
  are, as the write log takes them (`log_events`, through `Engine.apply`).

Scope codes index `sender_table`: codes [0, S) are senders, [S, S+E) are `entity:NAME`, and
S+E is `*` - the layout `SuppressionIndex.build(..., sender_table=...)` takes as is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from anning import SuppressionIndex
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN
from anning.model.scopes import SOURCES

if TYPE_CHECKING:
    from anning.engine import Engine

SEED = 20240601
CHUNK = 1 << 22  # entries per generation chunk; fixed, so the data do not depend on memory
UNKNOWN = np.uint32(0xFFFFFFFF)  # a query sender code the list has never seen

# Chinese mobile prefixes (the three digits after 86): 130-139, 145-149, 150-159 (no 154),
# 166, 170-178, 180-189, 191, 193, 195-199. Weighted: the older 13x/15x/18x ranges hold more
# subscribers than 14x/16x/17x/19x.
_PREFIXES = np.array(
    [*range(130, 140), 145, 147, 149, *(p for p in range(150, 160) if p != 154), 166,
     *range(170, 179), *range(180, 190), 191, 193, *range(195, 200)],
    dtype=np.uint64,
)
_PREFIX_WEIGHT = np.array(
    [3.0 if p // 10 in (13, 15, 18) else 1.0 for p in _PREFIXES.tolist()], dtype=np.float64
)
_PREFIX_CDF = np.cumsum(_PREFIX_WEIGHT) / _PREFIX_WEIGHT.sum()

_HAN = (
    "京东淘宝美团拼多多饿了么携程滴滴顺丰中国移动联通电信招商建设工商农业交通平安人寿华为小米"
    "唯品会苏宁国美网易腾讯百度阿里巴巴字节跳动快手抖音微博新浪搜狐爱奇艺优酷芒果哔哩喜马拉雅"
    "大众点评口碑盒马永辉沃尔玛家乐福屈臣氏星巴克瑞幸肯德基麦当劳必胜客海底捞汉庭如家锦江万达"
    "碧桂园恒大保利招联浦发民生兴业光大华夏广发中信北京上海广州深圳杭州南京成都重庆武汉西安"
)
_SUFFIXES = (
    "", "", "", "商城", "银行", "科技", "旅行", "保险", "证券", "外卖", "快递", "教育", "医院",
    "健康", "生活", "超市", "物流", "游戏", "视频", "音乐", "金融", "汽车", "地产", "会员", "优选",
)
_ENTITY_SUFFIXES = ("集团", "有限公司", "股份有限公司", "科技有限公司", "网络科技", "控股")


@dataclass
class Universe:
    """Senders, entities and the table of scope codes entries use."""

    senders: list[str]
    entity_names: list[str]
    sender_entity: np.ndarray  # int32 per sender: entity number, -1 when none
    sender_cdf: np.ndarray  # Zipf-like popularity of senders, cumulative
    entity_members: np.ndarray  # sender codes grouped by entity
    entity_offsets: np.ndarray  # entity e's members: entity_members[off[e]:off[e+1]]

    @property
    def n_senders(self) -> int:
        return len(self.senders)

    @property
    def n_entities(self) -> int:
        return len(self.entity_names)

    @property
    def global_code(self) -> int:
        return self.n_senders + self.n_entities

    @property
    def sender_table(self) -> list[str]:
        return [*self.senders, *(f"entity:{e}" for e in self.entity_names), "*"]

    @property
    def entities(self) -> dict[str, str]:
        return {
            self.senders[i]: self.entity_names[e]
            for i, e in enumerate(self.sender_entity.tolist())
            if e >= 0
        }

    def entity_code(self) -> np.ndarray:
        """Per sender, the scope code of its entity (UNKNOWN when none), as uint32."""
        codes = np.where(self.sender_entity >= 0, self.sender_entity + self.n_senders, -1)
        return codes.astype(np.int64).astype(np.uint32)  # -1 wraps to UNKNOWN


@dataclass
class Entries:
    numbers: np.ndarray  # uint64 E.164 digits
    codes: np.ndarray  # uint32 scope codes into Universe.sender_table
    masks: np.ndarray  # uint8 category masks: 1 marketing, 2 notification, 0xFF all


@dataclass
class Queries:
    senders: np.ndarray  # uint32 sender codes (< n_senders), or UNKNOWN
    numbers: np.ndarray  # uint64
    present: np.ndarray  # bool: taken from an entry
    entry_kind: np.ndarray  # uint8 for present queries: 1 sender, 2 entity, 3 global; else 0
    entry_mask: np.ndarray  # uint8 for present queries: the mask of that entry; else 0

    def sender_strings(self, universe: Universe, seed: int = SEED) -> list[str]:
        """Query senders as text, as a client sends them: a share in 【】, unknown ones made up."""
        rng = np.random.default_rng([seed, 7])
        wrap = rng.random(len(self.senders)) < 0.3
        names = universe.senders
        out = []
        for i, (code, w) in enumerate(zip(self.senders.tolist(), wrap.tolist(), strict=True)):
            name = f"未知发送方{i}" if code == UNKNOWN else names[code]
            out.append(f"【{name}】" if w else name)
        return out


def _unique_names(make, count: int, rng: np.random.Generator) -> list[str]:
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < count:
        name = make(rng)
        if tries > 20 * count:  # the space ran out: make it unique with a number
            name = f"{name}{len(seen)}"
        seen.setdefault(name, None)
        tries += 1
    return list(seen)


def _han_name(rng: np.random.Generator, lo: int = 2, hi: int = 4) -> str:
    k = int(rng.integers(lo, hi + 1))
    return "".join(_HAN[i] for i in rng.integers(0, len(_HAN), k))


def make_universe(
    n_senders: int = 50_000,
    n_entities: int = 5_000,
    entity_share: float = 0.2,
    zipf_s: float = 1.05,
    seed: int = SEED,
) -> Universe:
    """The sender universe: names, entities and popularity. Python loops over senders only."""
    rng = np.random.default_rng([seed, 1])
    n_han = n_senders * 6 // 10
    n_port = n_senders * 3 // 10
    n_acct = n_senders - n_han - n_port

    def signature(r: np.random.Generator) -> str:
        return _han_name(r) + _SUFFIXES[int(r.integers(0, len(_SUFFIXES)))]

    def port(r: np.random.Generator) -> str:
        head = ("1069", "10690", "106575", "10655", "1065", "106")[int(r.integers(0, 6))]
        return head + "".join(map(str, r.integers(0, 10, int(r.integers(4, 9)))))

    def account(r: np.random.Generator) -> str:
        return ("sp", "acct", "cust", "ym")[int(r.integers(0, 4))] + str(
            int(r.integers(100_000, 10_000_000))
        )

    senders = (
        _unique_names(signature, n_han, rng)
        + _unique_names(port, n_port, rng)
        + _unique_names(account, n_acct, rng)
    )
    order = rng.permutation(n_senders)  # mix kinds over popularity ranks
    senders = [senders[i] for i in order.tolist()]

    def entity(r: np.random.Generator) -> str:
        return _han_name(r, 2, 4) + _ENTITY_SUFFIXES[int(r.integers(0, len(_ENTITY_SUFFIXES)))]

    entity_names = _unique_names(entity, n_entities, rng)
    members = rng.choice(n_senders, size=int(n_senders * entity_share), replace=False)
    # Every entity has at least one sender; the rest are spread at random.
    owner = np.concatenate(
        [np.arange(min(n_entities, len(members))),
         rng.integers(0, n_entities, max(0, len(members) - n_entities))]
    )
    sender_entity = np.full(n_senders, -1, dtype=np.int32)
    sender_entity[members] = owner
    by_entity = np.argsort(owner, kind="stable")
    entity_members = members[by_entity].astype(np.uint32)
    entity_offsets = np.searchsorted(owner[by_entity], np.arange(n_entities + 1)).astype(np.int64)

    ranks = np.arange(1, n_senders + 1, dtype=np.float64)
    weight = 1.0 / (ranks + 2.0) ** zipf_s
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    return Universe(senders, entity_names, sender_entity, cdf, entity_members, entity_offsets)


def random_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Chinese mobile numbers as E.164 digits: 86, a 1[3-9]x prefix, 8 random digits."""
    prefix = _PREFIXES[np.searchsorted(_PREFIX_CDF, rng.random(n), side="right")]
    rest = rng.integers(0, 100_000_000, n, dtype=np.uint64)
    return np.uint64(8_600_000_000_000) + prefix * np.uint64(100_000_000) + rest


def national(numbers: np.ndarray) -> list[str]:
    """E.164 Chinese numbers as a caller writes them: "13812345678"."""
    return [str(n - 8_600_000_000_000) for n in numbers.tolist()]


def zipf_senders(rng: np.random.Generator, universe: Universe, n: int) -> np.ndarray:
    return np.searchsorted(universe.sender_cdf, rng.random(n), side="right").astype(np.uint32)


def _entries_chunk(
    universe: Universe, seed: int, chunk: int, n: int, entity_prob: float,
    global_share: float, repeat_share: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 2, chunk])
    numbers = random_numbers(rng, n)
    # One person opting out of several senders: copy the number of an entry nearby.
    repeat = np.flatnonzero(rng.random(n) < repeat_share)
    if n > 1 and repeat.size:
        numbers[repeat] = numbers[rng.integers(0, n, repeat.size)]
    codes = zipf_senders(rng, universe, n)
    ent = universe.sender_entity[codes]
    to_entity = (ent >= 0) & (rng.random(n) < entity_prob)
    codes[to_entity] = (ent[to_entity] + universe.n_senders).astype(np.uint32)
    codes[rng.random(n) < global_share] = universe.global_code
    u = rng.random(n)
    masks = np.where(u < 0.85, 1, np.where(u < 0.93, 2, 0xFF)).astype(np.uint8)
    return numbers, codes, masks


def generate_entries(
    n: int,
    universe: Universe,
    seed: int = SEED,
    entity_prob: float = 0.5,
    global_share: float = 0.01,
    repeat_share: float = 0.25,
    progress: bool = False,
) -> Entries:
    """n entries, generated chunk by chunk straight into the output arrays (13 B per entry)."""
    numbers = np.empty(n, dtype=np.uint64)
    codes = np.empty(n, dtype=np.uint32)
    masks = np.empty(n, dtype=np.uint8)
    t0 = time.perf_counter()
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        nums, cods, msks = _entries_chunk(
            universe, seed, c, stop - start, entity_prob, global_share, repeat_share
        )
        numbers[start:stop], codes[start:stop], masks[start:stop] = nums, cods, msks
        if progress and c % 16 == 15:
            rate = stop / (time.perf_counter() - t0)
            print(f"  generated {stop:,} / {n:,} entries ({rate / 1e6:.1f} M/s)", file=sys.stderr)
    return Entries(numbers, codes, masks)


def generate_queries(
    q: int,
    entries: Entries,
    universe: Universe,
    seed: int = SEED,
    present_share: float = 0.1,
    unknown_share: float = 0.01,
) -> Queries:
    """q (sender, number) queries: present_share from the entries, the rest random."""
    rng = np.random.default_rng([seed, 3])
    n = len(entries.numbers)
    numbers = random_numbers(rng, q)
    senders = zipf_senders(rng, universe, q)
    present = np.zeros(q, dtype=bool)
    kind = np.zeros(q, dtype=np.uint8)
    mask = np.zeros(q, dtype=np.uint8)
    if n:
        pos = np.flatnonzero(rng.random(q) < present_share)
        src = rng.integers(0, n, pos.size)
        code = entries.codes[src]
        numbers[pos] = entries.numbers[src]
        present[pos] = True
        mask[pos] = entries.masks[src]
        is_sender = code < universe.n_senders
        is_global = code == universe.global_code
        is_entity = ~is_sender & ~is_global
        kind[pos] = np.where(is_sender, 1, np.where(is_entity, 2, 3))
        # A sender entry is asked by that sender; an entity entry by one of its senders;
        # a global entry by the Zipf sender already drawn.
        senders[pos[is_sender]] = code[is_sender]
        e = code[is_entity].astype(np.int64) - universe.n_senders
        lo, hi = universe.entity_offsets[e], universe.entity_offsets[e + 1]
        pick = lo + (rng.random(e.size) * (hi - lo)).astype(np.int64)
        senders[pos[is_entity]] = universe.entity_members[pick]
    unknown = (rng.random(q) < unknown_share) & ~present
    senders[unknown] = UNKNOWN
    return Queries(senders, numbers, present, kind, mask)


@dataclass
class Dataset:
    universe: Universe
    entries: Entries
    queries: Queries


def generate(n: int, q: int, seed: int = SEED, progress: bool = False, **universe_kw) -> Dataset:
    universe = make_universe(seed=seed, **universe_kw)
    entries = generate_entries(n, universe, seed, progress=progress)
    return Dataset(universe, entries, generate_queries(q, entries, universe, seed))


def build_index(universe: Universe, entries: Entries, **kw) -> SuppressionIndex:
    """The SuppressionIndex of generated entries (the fast path: codes into the sender table)."""
    return SuppressionIndex.build(
        entries.numbers, entries.codes, entries.masks, universe.entities,
        sender_table=universe.sender_table, **kw
    )


def array_bytes(index: SuppressionIndex) -> int:
    """The bytes of the index's arrays alone (`nbytes` adds its Python tables)."""
    a = index.arrays()
    return sum(x.nbytes for x in (a.directory, a.words, a.bloom, a.sender_scope,
                                  a.sender_entity))


# -- events ----------------------------------------------------------------------------------

CATEGORY_OF_MASK = {1: "marketing", 2: "notification", 0xFF: "all"}


@dataclass
class Events:
    """Real-time events in the order they are logged. Kinds are anning.model.events' OPT_OUT,
    OPT_IN, REASSIGN; sources index anning.model.scopes.SOURCES; times increase."""

    numbers: np.ndarray  # uint64
    codes: np.ndarray  # uint32 scope codes into Universe.sender_table (unused by REASSIGN)
    masks: np.ndarray  # uint8: 1 marketing, 2 notification, 0xFF all
    kinds: np.ndarray  # uint8
    at_ms: np.ndarray  # int64
    sources: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.numbers)


def generate_events(n: int, universe: Universe, after_ms: int, until_ms: int,
                    seed: int = SEED) -> Events:
    """n events: numbers, scopes and masks drawn as entries are (sender, entity and global
    scopes, every category mask, a quarter of the numbers repeated), 8% opt-ins and 2%
    reassignments, 70% replies, times spread evenly over (after_ms, until_ms]."""
    e = generate_entries(n, universe, seed + 1)
    rng = np.random.default_rng([seed, 99])
    kinds = np.where(rng.random(n) < 0.08, OPT_IN, OPT_OUT).astype(np.uint8)
    kinds[rng.random(n) < 0.02] = REASSIGN
    at = after_ms + 1 + np.arange(n, dtype=np.int64) * (until_ms - after_ms - 1) // max(n, 1)
    sources = np.where(rng.random(n) < 0.7, 1, np.where(rng.random(n) < 0.5, 2, 5))
    return Events(e.numbers, e.codes, e.masks, kinds, at, sources.astype(np.uint8))


def event_requests(events: Events, universe: Universe, lo: int = 0,
                   hi: int | None = None) -> Iterator[tuple[int, str, str, int, int, str]]:
    """Events lo..hi as writes: (number, scope, category, kind, at_ms, source), what
    `Engine.make_event` takes."""
    table = universe.sender_table
    cols = [c[lo:hi].tolist() for c in (events.numbers, events.codes, events.masks,
                                         events.kinds, events.at_ms, events.sources)]
    for number, code, mask, kind, at, source in zip(*cols, strict=True):
        yield number, table[code], CATEGORY_OF_MASK[mask], kind, at, SOURCES[source]


def log_events(engine: Engine, events: Events, universe: Universe, batch: int = 10_000) -> None:
    """Make the events durable in the engine's data directory through `Engine.apply`, `batch`
    a call (one append and one fsync each), as a server's group commit would."""
    for lo in range(0, len(events), batch):
        engine.apply([engine.make_event(*w)
                      for w in event_requests(events, universe, lo, lo + batch)])


def describe(data: Dataset) -> dict[str, float]:
    u, e, q = data.universe, data.entries, data.queries
    n = max(len(e.numbers), 1)
    return {
        "entries": len(e.numbers),
        "senders": u.n_senders,
        "entities": u.n_entities,
        "senders_in_entities": int((u.sender_entity >= 0).sum()),
        "sender_entries": float((e.codes < u.n_senders).sum() / n),
        "entity_entries": float(((e.codes >= u.n_senders) & (e.codes < u.global_code)).sum() / n),
        "global_entries": float((e.codes == u.global_code).sum() / n),
        "top_sender_share": float(np.bincount(e.codes, minlength=1).max() / n),
        "queries": len(q.numbers),
        "present_queries": float(q.present.mean()) if len(q.numbers) else 0.0,
    }


def save(data: Dataset, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    u, e, q = data.universe, data.entries, data.queries
    for name, arr in (
        ("numbers", e.numbers), ("codes", e.codes), ("masks", e.masks),
        ("query_senders", q.senders), ("query_numbers", q.numbers),
        ("query_present", q.present), ("query_kind", q.entry_kind), ("query_mask", q.entry_mask),
        ("sender_entity", u.sender_entity), ("sender_cdf", u.sender_cdf),
        ("entity_members", u.entity_members), ("entity_offsets", u.entity_offsets),
    ):
        np.save(out / f"{name}.npy", arr)
    (out / "senders.txt").write_text("\n".join(u.senders) + "\n", encoding="utf-8")
    (out / "entities.txt").write_text("\n".join(u.entity_names) + "\n", encoding="utf-8")
    (out / "sender_table.txt").write_text("\n".join(u.sender_table) + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(describe(data), indent=2, ensure_ascii=False))


def load(out: Path, mmap: bool = True) -> Dataset:
    """Read a directory written by `save` (arrays memory-mapped by default)."""
    mode = "r" if mmap else None

    def arr(name: str) -> np.ndarray:
        return np.load(out / f"{name}.npy", mmap_mode=mode)

    def lines(name: str) -> list[str]:
        return (out / name).read_text(encoding="utf-8").splitlines()

    universe = Universe(
        lines("senders.txt"), lines("entities.txt"), arr("sender_entity"), arr("sender_cdf"),
        arr("entity_members"), arr("entity_offsets"),
    )
    entries = Entries(arr("numbers"), arr("codes"), arr("masks"))
    queries = Queries(
        arr("query_senders"), arr("query_numbers"), arr("query_present"), arr("query_kind"),
        arr("query_mask"),
    )
    return Dataset(universe, entries, queries)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1_000_000)
    p.add_argument("--senders", type=int, default=50_000)
    p.add_argument("--entities", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    data = generate(
        args.entries, args.queries, args.seed, progress=True,
        n_senders=args.senders, n_entities=args.entities,
    )
    t1 = time.perf_counter()
    save(data, args.out)
    print(json.dumps(describe(data), indent=2, ensure_ascii=False))
    t2 = time.perf_counter()
    print(f"generated in {t1 - t0:.1f} s, written to {args.out} in {t2 - t1:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
