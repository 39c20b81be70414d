"""What every fuzz target shares: the sanitizer environment, and a start that works the same
whether the compiled core was built with ANNING_SANITIZE=1 or normally.

A sanitizer build of anning's extensions cannot even be imported unless the AddressSanitizer
runtime is loaded before Python starts (LD_PRELOAD), and that runtime must be atheris'
`asan_with_fuzzer.so`: with plain libclang_rt.asan preloaded, the coverage callbacks of the
instrumented extensions land in ASan's weak stubs instead of libFuzzer, and the fuzzer is blind
inside ext/ (atheris' native_extension_fuzzing.md). So a target started by hand re-executes
itself once with that environment; fuzz/run.py sets it up front.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
# Interpreter leaks at start-up are not ours; UB must stop the run, not scroll by.
ASAN_OPTIONS = "detect_leaks=0:allocator_may_return_null=1:handle_abort=1:symbolize=1"
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1:report_error_type=1"


class PropertyViolation(AssertionError):
    """A target's property failed: atheris reports it as a crash and keeps the input."""


def expect(condition: object, message: str) -> None:
    """`assert` that survives python -O: a property that is not checked is no property."""
    if not condition:
        raise PropertyViolation(message)


def _extension_files() -> list[Path]:
    spec = importlib.util.find_spec("anning")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("_*.so"))


def sanitized_build() -> bool:
    """Whether the installed compiled core is the ANNING_SANITIZE=1 build."""
    return any(b"__asan_report_" in path.read_bytes() for path in _extension_files())


def sanitizer_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a Python process needs to import the sanitizer build under atheris."""
    import atheris

    env = dict(os.environ if base is None else base)
    runtime = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not runtime.exists():
        raise SystemExit(f"{runtime} is missing: atheris was installed without its sanitizer "
                         "runtimes (pip install atheris on Linux x86-64 ships them)")
    env["LD_PRELOAD"] = str(runtime)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS") or ASAN_OPTIONS
    env["UBSAN_OPTIONS"] = env.get("UBSAN_OPTIONS") or UBSAN_OPTIONS
    return env


def preload() -> None:
    """Re-execute this script with the sanitizer runtime preloaded, when the installed core is
    the sanitizer build and it is not preloaded yet. Call before importing anning."""
    if "asan_with_fuzzer" in os.environ.get("LD_PRELOAD", "") or not sanitized_build():
        return
    env = sanitizer_env()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Start libFuzzer on test_one_input with this process's argv (libFuzzer flags and corpus
    directories)."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
