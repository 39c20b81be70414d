"""A small generated demo list, so that a fresh machine has something to serve."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from anning.index import SuppressionIndex
from anning.storage.layout import DataDir
from anning.storage.snapshot import write_snapshot

__all__ = ["build_demo", "ensure_snapshot"]

_BRANDS = ["京东", "淘宝", "美团", "拼多多", "携程", "滴滴", "饿了么", "苏宁", "唯品会", "小米"]
_MOBILE_PREFIXES = np.array(
    [130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156, 157, 158, 159, 166,
     170, 176, 177, 178, 180, 181, 182, 183, 185, 186, 187, 188, 189, 191, 198, 199],
    dtype=np.uint64,
)


def build_demo(entries: int = 100_000, seed: int = 2026) -> SuppressionIndex:
    """Opt-outs of random Chinese mobiles: mostly against one signature, some against a
    merchant (entity) and a few global; senders skewed as real traffic is."""
    rng = np.random.default_rng(seed)
    signatures = [f"【{b}{suffix}】" for b in _BRANDS for suffix in ("", "超市", "金融", "旅行")]
    ports = [f"10690{n:05d}" for n in rng.choice(100_000, 200, replace=False)]
    entity_of = {s.strip("【】"): f"{s.strip('【】')[:2]}集团" for s in signatures}
    table = signatures + ports + [f"entity:{e}" for e in sorted(set(entity_of.values()))] + ["*"]
    weights = 1.0 / np.arange(1, len(table) + 1) ** 1.1
    weights[len(signatures) + len(ports):-1] = weights.mean() / 4
    weights[-1] = weights.mean() / 8
    codes = rng.choice(len(table), entries, p=weights / weights.sum()).astype(np.uint32)
    numbers = (
        _MOBILE_PREFIXES[rng.integers(0, len(_MOBILE_PREFIXES), entries)] * np.uint64(10**8)
        + rng.integers(0, 10**8, entries, dtype=np.uint64)
        + np.uint64(86 * 10**11)
    )
    masks = rng.choice(np.array([1, 2, 0xFF], np.uint8), entries, p=[0.85, 0.05, 0.10])
    as_of_ms = int(time.time() * 1000)
    meta = {"source": "demo", "as_of_ms": as_of_ms,
            "as_of": datetime.fromtimestamp(as_of_ms / 1000, timezone.utc).isoformat()}
    return SuppressionIndex.build(numbers, codes, masks, entity_of, sender_table=table, meta=meta)


def ensure_snapshot(data_dir: str | Path, entries: int = 100_000) -> tuple[Path, bool]:
    """The snapshot in `data_dir`, generating the demo list when there is none.
    Returns its path and whether it was generated now."""
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    path = DataDir(data).snapshot
    if path.exists():
        return path, False
    write_snapshot(build_demo(entries), path)
    return path, True
