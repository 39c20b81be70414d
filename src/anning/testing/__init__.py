"""Test tools that ship with anning: an SMSC simulator, an `anning serve` process harness."""
