"""Text snapshots for the load benchmarks (SPEC §5): CSV files of Chinese mobile numbers and
skewed senders, written chunk by chunk from numpy, so that 100M rows take a minute.

- `write_clean_csv`: `number,sender,category` rows as a nightly file looks (the pytest load
  benchmarks, against Python's csv module);
- `write_fixed_width_csv`: `number,【商户NNNNN】` rows of fixed width, written as byte matrices
  (the scale run of `anning load`), and the exact answers to a set of checks against the file,
  found chunk by chunk as the rows are made (no copy of the file's rows is kept);
- `write_entries_csv`: the generated list of benchmarks.lib.datagen (its senders, entities and
  masks) as `number,sender,category` rows and its `sender,entity` file, so that a load of it
  can be checked against the models of benchmarks.lib.oracle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from benchmarks.lib.datagen import Entries, Universe

__all__ = ["MOBILE_PREFIXES", "SENDERS", "SENDER_TEXT", "FixedWidthChecks", "random_mobiles",
           "write_clean_csv", "write_entries_csv", "write_fixed_width_csv"]

MOBILE_PREFIXES = np.array([130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156,
                            157, 158, 159, 166, 170, 176, 177, 178, 180, 181, 182, 183, 185, 186,
                            187, 188, 189, 191, 198, 199], dtype=np.int64)
SENDERS = 50_000  # of the fixed-width file
SENDER_TEXT = "【商户{:05d}】"  # fixed width in UTF-8: 17 bytes
_ROW = 11 + 1 + 17 + 1
_CN = 86 * 10**11


def random_mobiles(rng: np.random.Generator, n: int) -> np.ndarray:
    """n national mobile numbers (11 digits, int64) over MOBILE_PREFIXES."""
    return (MOBILE_PREFIXES[rng.integers(0, len(MOBILE_PREFIXES), n)] * 10**8
            + rng.integers(0, 10**8, n))


def write_clean_csv(path: Path, rows: int, seed: int = 42) -> None:
    """`number,sender,category` rows: national mobile numbers, 20,000 senders (Zipf-skewed),
    90% marketing, 5% notification, 5% all."""
    rng = np.random.default_rng(seed)
    senders = np.array([f"【商户{i}】" if i % 3 else f"10690{i:05d}" for i in range(20_000)])
    categories = np.array(["marketing", "notification", "all"])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("number,sender,category\n")
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            numbers = random_mobiles(rng, n)
            who = senders[np.minimum(rng.zipf(1.2, n) - 1, len(senders) - 1)]
            cat = categories[rng.choice(3, n, p=[0.9, 0.05, 0.05])]
            f.write("".join(f"{a},{b},{c}\n" for a, b, c in zip(numbers.tolist(), who.tolist(),
                                                                   cat.tolist(), strict=True)))


class FixedWidthChecks:
    """Checks against a fixed-width file and their exact answers.

    `numbers` (E.164, uint64) and `codes` (sender numbers, SENDER_TEXT) are random checks drawn
    as the file draws its rows (so a few of them are rows); `listed` says which are. `sample_*`
    are rows of the file (the first 1,000 of each chunk): each must be suppressed."""

    def __init__(self, numbers: np.ndarray, codes: np.ndarray, listed: np.ndarray,
                 sample_numbers: np.ndarray, sample_codes: np.ndarray) -> None:
        self.numbers, self.codes, self.listed = numbers, codes, listed
        self.sample_numbers, self.sample_codes = sample_numbers, sample_codes

    def save(self, directory: Path) -> None:
        for name in ("numbers", "codes", "listed", "sample_numbers", "sample_codes"):
            np.save(directory / f"checks-{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, directory: Path) -> FixedWidthChecks:
        return cls(*(np.load(directory / f"checks-{name}.npy") for name in (
            "numbers", "codes", "listed", "sample_numbers", "sample_codes")))


def _zipf_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(rng.zipf(1.2, n) - 1, SENDERS - 1)


def write_fixed_width_csv(path: Path, rows: int, checks: int = 1_000_000,
                          seed: int = 7) -> FixedWidthChecks:
    """Fixed-width rows `number,【商户NNNNN】` (numbers over MOBILE_PREFIXES, senders Zipf 1.2
    over SENDERS), and `checks` random checks with their exact answers (see FixedWidthChecks)."""
    qrng = np.random.default_rng(1)
    q_numbers = random_mobiles(qrng, checks)
    q_codes = _zipf_codes(qrng, checks)
    q_keys = q_numbers * 65536 + q_codes  # number < 2^35, code < 2^16
    listed = np.zeros(checks, dtype=bool)

    rng = np.random.default_rng(seed)
    table = np.frombuffer(
        b"".join(SENDER_TEXT.format(i).encode() for i in range(SENDERS)), np.uint8
    ).reshape(SENDERS, 17)
    powers = 10 ** np.arange(10, -1, -1, dtype=np.int64)
    sample_numbers, sample_codes = [], []
    with open(path, "wb") as f:
        f.write(b"number,sender\n")
        for start in range(0, rows, 2_000_000):
            n = min(2_000_000, rows - start)
            numbers = random_mobiles(rng, n)
            codes = _zipf_codes(rng, n)
            out = np.empty((n, _ROW), np.uint8)
            out[:, :11] = (numbers[:, None] // powers % 10 + 48).astype(np.uint8)
            out[:, 11] = ord(",")
            out[:, 12:29] = table[codes]
            out[:, 29] = ord("\n")
            f.write(out.tobytes())
            listed |= np.isin(q_keys, numbers * 65536 + codes)
            sample_numbers.append(numbers[:1000])
            sample_codes.append(codes[:1000])
    return FixedWidthChecks((q_numbers + _CN).astype(np.uint64), q_codes, listed,
                            (np.concatenate(sample_numbers) + _CN).astype(np.uint64),
                            np.concatenate(sample_codes))


def write_entries_csv(path: Path, entities_path: Path, universe: Universe,
                      entries: Entries) -> None:
    """`number,sender,category` rows of generated entries (national numbers; `entity:NAME`
    and `*` as a snapshot writes those scopes; mask 0xFF as `all`), and the `sender,entity`
    file that links the universe's senders to their entities."""
    from benchmarks.lib.datagen import CATEGORY_OF_MASK, national

    table = universe.sender_table
    category = {m: c.encode() for m, c in CATEGORY_OF_MASK.items()}
    with open(path, "wb") as f:
        f.write(b"number,sender,category\n")
        for start in range(0, len(entries.numbers), 1_000_000):
            stop = start + 1_000_000
            numbers = national(entries.numbers[start:stop])
            senders = [table[c] for c in entries.codes[start:stop].tolist()]
            masks = [category[m] for m in entries.masks[start:stop].tolist()]
            f.write(b"".join(b"%s,%s,%s\n" % (n.encode(), s.encode(), m)
                             for n, s, m in zip(numbers, senders, masks, strict=True)))
    with open(entities_path, "w", encoding="utf-8") as f:
        f.write("sender,entity\n")
        f.writelines(f"{s},{e}\n" for s, e in universe.entities.items())
