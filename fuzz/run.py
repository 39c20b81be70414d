"""Run the fuzz targets under the sanitizer build, one after another, from their committed
corpus and regression inputs; fail on any crash, sanitizer report or property violation.

    python fuzz/run.py --seconds 20                 # CI: every target, 20 s each
    python fuzz/run.py --targets wire csv           # some of them
    python fuzz/run.py --long                       # 1,000,000 executions or 10 minutes each

Targets run one at a time (libFuzzer uses one core; the machine is shared). New inputs go to a
scratch corpus, never into fuzz/corpus; a failing input is kept in the artifacts directory
(printed), to be minimised and committed under fuzz/regressions/<target>/ with its fix.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

FUZZ_DIR = _harness.FUZZ_DIR
LONG_RUNS = 1_000_000
LONG_SECONDS = 600
# What marks a failure in a target's output, whatever its exit status says.
FAILURE = re.compile(r"ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|"
                     r"libFuzzer)|runtime error:|Uncaught Python exception")
MAX_LEN = {"csv": 4096, "wire": 2048}  # bytes an input may grow to; libFuzzer's default else


@dataclass
class Outcome:
    target: str
    ok: bool
    executions: int
    seconds: float
    log: Path
    detail: str = ""


def targets() -> list[str]:
    return sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))


def run_target(name: str, seconds: int, runs: int | None, env: dict[str, str], out: Path,
               python: str) -> Outcome:
    scratch = out / f"{name}.corpus"
    scratch.mkdir(parents=True, exist_ok=True)
    inputs = [FUZZ_DIR / d / name for d in ("corpus", "regressions")]
    args = [python, str(FUZZ_DIR / f"fuzz_{name}.py"), f"-max_total_time={seconds}",
            "-print_final_stats=1", "-timeout=60", "-rss_limit_mb=4096",
            f"-artifact_prefix={out}/{name}-"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if name in MAX_LEN:
        args.append(f"-max_len={MAX_LEN[name]}")
    args += [str(scratch), *(str(d) for d in inputs if d.is_dir())]
    log = out / f"{name}.log"
    started = time.monotonic()
    with log.open("wb") as f:
        status = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env,
                                check=False).returncode
    elapsed = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    found = re.search(r"stat::number_of_executed_units: (\d+)", text) or \
        re.search(r"Done (\d+) runs", text)
    executions = int(found.group(1)) if found else 0
    failure = FAILURE.search(text)
    ok = status == 0 and failure is None and executions > 0
    detail = ""
    if not ok:
        crash = re.findall(r"Test unit written to (\S+)", text)
        detail = (f"exit status {status}; " + (f"'{failure.group(0)}'; " if failure else "")
                  + (f"input kept in {crash[-1]}" if crash else "no input kept"))
    return Outcome(name, ok, executions, elapsed, log, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=30, help="per target (default 30)")
    parser.add_argument("--long", action="store_true",
                        help=f"{LONG_RUNS:,} executions or {LONG_SECONDS} s each, "
                             "whichever comes first")
    parser.add_argument("--targets", nargs="+", choices=targets(), default=targets())
    parser.add_argument("--out", type=Path, help="logs, scratch corpora and failing inputs "
                                                 "(default: a new temporary directory)")
    parser.add_argument("--allow-plain", action="store_true",
                        help="run on a normal build too (no sanitizers, no native coverage)")
    args = parser.parse_args(argv)
    if _harness.sanitized_build():
        env = _harness.sanitizer_env()
    elif args.allow_plain:
        env = dict(os.environ)
        print("fuzz: not the sanitizer build: no sanitizers, no coverage inside ext/")
    else:
        print("fuzz: the installed anning is not the sanitizer build; build it first:\n"
              "  ANNING_SANITIZE=1 python3 -m pip install --force-reinstall --no-deps .",
              file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="anning-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    seconds, runs = (LONG_SECONDS, LONG_RUNS) if args.long else (args.seconds, None)
    print(f"fuzz: {len(args.targets)} targets, {'long run: ' if args.long else ''}"
          f"{seconds} s{f' or {runs:,} executions' if runs else ''} each; output in {out}",
          flush=True)
    outcomes = []
    for name in args.targets:
        outcome = run_target(name, seconds, runs, env, out, sys.executable)
        outcomes.append(outcome)
        rate = outcome.executions / outcome.seconds if outcome.seconds else 0
        print(f"{name:<12} {'ok' if outcome.ok else 'FAILED':<7} {outcome.executions:>11,} "
              f"executions {outcome.seconds:7.1f} s {rate:9,.0f}/s  {outcome.detail}",
              flush=True)
        if not outcome.ok:
            tail = outcome.log.read_text("utf-8", "replace").splitlines()[-40:]
            print("\n".join(f"    {line}" for line in tail), flush=True)
    failed = [o.target for o in outcomes if not o.ok]
    if not args.out and not failed:
        shutil.rmtree(out, ignore_errors=True)
    print(f"fuzz: {len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
