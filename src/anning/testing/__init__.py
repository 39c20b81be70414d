"""Parts for tests and benchmarks: a crash-simulating file layer and a server process harness."""
