"""anning in the message path: an SMPP gate between platforms' ESMEs and the SMSC (SPEC §9).

`anning smpp-gate --listen HOST:PORT --upstream HOST:PORT --config FILE` runs it; see
anning.gate.gate for what it does with each PDU and anning.gate.backend for how it asks anning.
"""
