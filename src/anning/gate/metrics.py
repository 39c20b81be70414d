"""Prometheus metrics of the gate, served like the server's (`--metrics HOST:PORT`, loopback
when no host is given). Each gate has a registry of its own, so that tests and the benchmark
can run several gates in one process without the names colliding."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["GateMetrics", "serve_metrics"]

SCOPES = ("none", "sender", "entity", "global")


class GateMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.checked = Counter("anning_gate_submits_checked_total",
                               "Submits (whole messages) decided by a check", registry=r)
        self.refused = Counter("anning_gate_submits_refused_total",
                               "Submits refused, by the scope that suppressed them or the "
                               "reason (unavailable, throttled, invalid)", ["reason"],
                               registry=r)
        self.forwarded = Counter("anning_gate_submits_forwarded_total",
                                 "Submits forwarded to the SMSC", registry=r)
        self.replies = Counter("anning_gate_replies_total",
                               "Users' replies (MO) read by the reply rules, by action",
                               ["action"], registry=r)
        self.opt_outs = Counter("anning_gate_opt_outs_total",
                                "Opt-outs taken from users' replies (durable)", registry=r)
        self.receipts = Counter("anning_gate_receipts_total",
                                "Delivery receipts passed to a bound receiver", registry=r)
        self.added = Histogram(
            "anning_gate_added_seconds",
            "Time a submit spends in the gate before it is forwarded or refused",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1),
            registry=r)
        self.batch = Histogram("anning_gate_check_batch_size", "Checks in one backend call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), registry=r)
        self.sessions = Gauge("anning_gate_sessions", "Bound ESME sessions", registry=r)
        self.upstream_up = Gauge("anning_gate_upstream_bound",
                                 "1 while the gate is bound to the SMSC", registry=r)
        self.closed = Counter("anning_gate_sessions_closed_total",
                              "ESME sessions closed by the gate, by reason", ["reason"],
                              registry=r)
        self.by_scope = tuple(self.refused.labels(name) for name in SCOPES)

    def refused_for(self, reason: str) -> Any:
        return self.refused.labels(reason)


def serve_metrics(metrics: GateMetrics, address: str) -> None:
    """Serve /metrics on HOST:PORT (PORT alone: loopback)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=metrics.registry)
