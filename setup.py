"""Build of the compiled core (anning._normalize, _index, _csv, _wire, _events, _stream) and
the gRPC stubs (from proto/); metadata is in pyproject.toml.

Environment switches:
  ANNING_DEBUG=1   invariant checks in the core (sorted keys, no duplicates, no false negatives)
  ANNING_NATIVE=1  -march=native (off by default: wheels must run on any x86-64)
  ANNING_SANITIZE=1  clang with AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer's
                   coverage (-fsanitize=fuzzer-no-link), for the fuzz targets in fuzz/ (see
                   fuzz/README.md: Python must preload atheris' asan_with_fuzzer.so to import it)
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
import gen_country_table

gen_country_table.main(os.path.join("ext", "country_table.h"))


def generate_protos() -> None:
    """proto/anning/v1/*.proto -> src/anning/v1/*_pb2.py, *_pb2_grpc.py, *.pyi (build outputs)."""
    from grpc_tools import protoc

    for name in sorted(os.listdir(os.path.join("proto", "anning", "v1"))):
        if name.endswith(".proto"):
            args = ["protoc", "-Iproto", "--python_out=src", "--pyi_out=src",
                    "--grpc_python_out=src", f"proto/anning/v1/{name}"]
            if protoc.main(args) != 0:
                raise SystemExit(f"protoc failed on proto/anning/v1/{name}")


generate_protos()

debug = os.environ.get("ANNING_DEBUG", "") not in ("", "0")
compile_args = ["-O3", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
if os.environ.get("ANNING_NATIVE", "") not in ("", "0"):
    compile_args.append("-march=native")
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if debug:
    macros.append(("ANNING_DEBUG", "1"))
    compile_args = [a for a in compile_args if a != "-O3"] + ["-O1", "-g"]
link_args: list[str] = []
if os.environ.get("ANNING_SANITIZE", "") not in ("", "0"):
    # Fuzzing build: the sanitizers only exist with clang (Debian's `clang` package), and
    # setuptools takes its compiler and linker from CC / LDSHARED. -O1 -g keeps reports
    # readable; recover=undefined makes UB a crash the fuzzer notices, not a line in a log.
    os.environ["CC"] = os.environ.get("ANNING_SANITIZE_CC", "clang")
    os.environ["LDSHARED"] = os.environ["CC"] + " -shared"
    sanitize = ["-fsanitize=address,undefined,fuzzer-no-link", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined"]
    compile_args = [a for a in compile_args if a not in ("-O3", "-march=native")]
    compile_args += ["-O1", "-g", *sanitize]
    link_args = sanitize

extensions = [
    Extension(
        f"anning.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in ("_normalize", "_index", "_csv", "_wire", "_events", "_stream")
]

# One build directory per kind of build: setuptools skips compiling an extension whose object
# is newer than its sources, whatever the flags, so `ANNING_SANITIZE=1 pip install .` after a
# normal build (or `build_ext --inplace`) installed the normal objects again, and the reverse.
_kind = "-".join(name for name, on in (
    ("debug", debug), ("native", "-march=native" in compile_args),
    ("sanitize", bool(link_args))) if on) or "release"

setup(
    options={"build": {"build_base": os.path.join("build", _kind)}},
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
)
