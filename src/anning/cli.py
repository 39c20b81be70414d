"""The `anning` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from anning import __version__
from anning.demo import SNAPSHOT_NAME, ensure_snapshot
from anning.errors import CorruptSnapshot, InvalidInput
from anning.index import SuppressionIndex
from anning.scopes import Scope

DEFAULT_DATA = "./anning-data"


def _load(data: str) -> SuppressionIndex:
    path = Path(data) / SNAPSHOT_NAME
    if not path.exists():
        raise SystemExit(f"anning: no snapshot at {path} (run `anning demo --data {data}`)")
    return SuppressionIndex.load(path)


def _status(idx: SuppressionIndex, seconds: float) -> dict:
    return {
        "entries": len(idx),
        "senders": len(idx.senders),
        "scopes": len(idx.scopes),
        "categories": list(idx.categories),
        "bytes": idx.nbytes,
        "bytes_per_entry": round(idx.nbytes / max(len(idx), 1), 2),
        "load_seconds": round(seconds, 4),
        "snapshot": idx.meta.get("path"),
        "as_of": idx.meta.get("as_of"),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    path, generated = ensure_snapshot(args.data, args.entries)
    started = time.perf_counter()
    idx = SuppressionIndex.load(path)
    status = _status(idx, time.perf_counter() - started)
    print(("generated demo list; " if generated else "") + json.dumps(status, ensure_ascii=False))
    numbers, scopes, _ = idx.entries()
    print("try, e.g.:", *(f"{idx.scopes[s] if idx.scopes[s] != '*' else 'anyone'} "
                          f"{int(n)}" for n, s in zip(numbers[:3], scopes[:3], strict=True)),
          sep="\n  ")
    print("checks from standard input, one `SENDER NUMBER [CATEGORY]` a line; Ctrl-D ends",
          flush=True)
    return _answer_lines(idx, sys.stdin)


def _answer_lines(idx: SuppressionIndex, lines) -> int:
    failures = 0
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            print(f"error: expected `SENDER NUMBER [CATEGORY]`, got {line.strip()!r}", flush=True)
            failures += 1
            continue
        try:
            scope = idx.check(*parts)
        except InvalidInput as exc:
            print(f"error: {exc}", flush=True)
            failures += 1
            continue
        print(f"{'SUPPRESSED' if scope else 'ok'} {scope.name}", flush=True)
    return 1 if failures else 0


def cmd_check(args: argparse.Namespace) -> int:
    idx = _load(args.data)
    try:
        scope = idx.check(args.sender, args.number, args.category)
    except InvalidInput as exc:
        print(f"anning: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"suppressed": bool(scope), "scope": scope.name}))
    return 0 if scope is Scope.NONE else 1


def cmd_info(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    idx = _load(args.data)
    seconds = time.perf_counter() - started
    if args.verify:
        idx.verify()
    print(json.dumps(_status(idx, seconds), ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anning", description=__doc__)
    parser.add_argument("--version", action="version", version=f"anning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="serve a local demo list: checks from standard input")
    demo.add_argument("--data", default=DEFAULT_DATA, help="data directory (default %(default)s)")
    demo.add_argument("--entries", type=int, default=100_000,
                      help="size of the generated list when there is none")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check", help="one check against the snapshot in --data; "
                                         "exit 1 when suppressed")
    check.add_argument("sender")
    check.add_argument("number")
    check.add_argument("--category", default="marketing")
    check.add_argument("--data", default=DEFAULT_DATA)
    check.set_defaults(func=cmd_check)

    info = sub.add_parser("info", help="what the snapshot in --data holds")
    info.add_argument("--data", default=DEFAULT_DATA)
    info.add_argument("--verify", action="store_true", help="also check every invariant")
    info.set_defaults(func=cmd_info)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CorruptSnapshot as exc:
        print(f"anning: refusing the snapshot: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
