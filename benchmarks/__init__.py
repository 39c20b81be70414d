"""anning's benchmarks: a package, run from the repository root against the installed anning.

    python -m pytest benchmarks -q                 # the pytest benchmarks (CI size)
    python -m benchmarks.service_bench --quick     # a script: always `-m`, never a file path

`-m` puts the repository root on the path, so scripts and tests import `benchmarks.lib` like any
package (no path set-up in any file); `anning` itself comes from the installed package, not
from `src/`. The shared parts live in `benchmarks.lib`; see benchmarks/README.md.
"""
