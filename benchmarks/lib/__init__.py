"""What the benchmarks share, written once: data (`datagen`, `csvgen`), the exact models the
answers are checked against (`oracle`), the peers (`peers`), the processes and the machine
(`servers`, `machine`), the load generators (`loadgen`) and the figures table (`figures`)."""
