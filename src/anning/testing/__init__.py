"""Parts for tests and benchmarks that ship with anning: a crash-simulating file layer, an
`anning serve` process harness, the write-side scenario, and an SMSC simulator."""
