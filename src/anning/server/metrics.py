"""Prometheus metrics (SPEC §7): checks and suppressions by scope, latency per method, readiness,
entries, snapshot age, write-log lag, refusals (and how the last load ended) and errors by code.
The alert rules and dashboard in deploy/ use these names (tests/deploy checks them).

With several worker processes, prometheus_client's multiprocess mode is used: the parent sets
PROMETHEUS_MULTIPROC_DIR before the workers record anything, and serves the merged figures.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["Metrics", "prepare_multiprocess", "serve_metrics"]


def prepare_multiprocess(directory: Path) -> None:
    """Call before prometheus_client is imported anywhere, in the parent of the workers."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.checks = Counter("anning_checks_total", "Checks answered, by scope matched",
                              ["scope"])
        self.latency = Histogram(
            "anning_request_seconds", "Time to answer, by method", ["method"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10),
        )
        self.errors = Counter("anning_errors_total", "Requests refused or failed, by code",
                              ["method", "code"])
        self.bad_requests = Counter(
            "anning_bad_requests_total", "Requests refused as bad input (reason: undecodable, "
            "invalid, too_large) and calls that failed on anning's side (failed)",
            ["method", "reason"])
        self.refusals = Counter("anning_snapshot_refusals_total", "Snapshot loads refused")
        self.changes = Counter("anning_changes_sent_total",
                               "Events sent to change-feed followers (OptOuts.Changes)")
        multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        mode = {"multiprocess_mode": "max"} if multiprocess else {}
        self.ready = Gauge("anning_ready", "1 while a list is loaded and checks are answered",
                           **mode)
        self.entries = Gauge("anning_entries", "Entries in the serving list", **mode)
        self.snapshot_age = Gauge("anning_snapshot_age_seconds",
                                  "Age of the serving snapshot's as_of", **mode)
        self.events = Gauge("anning_events", "Real-time events on top of the snapshot", **mode)
        self.log_lag = Gauge("anning_write_log_lag_bytes",
                             "Write-log bytes not yet taken in by this worker", **mode)
        self.writes_ok = Gauge("anning_writes_ok", "1 while writes are accepted", **mode)
        self.last_sequence = Gauge("anning_last_sequence",
                                   "Sequence of the last event taken", **mode)
        self.feed_lag = Gauge("anning_feed_lag_events", "Events upstream has not declared it "
                              "has taken in (last sequence - the list's events_through)", **mode)
        self.oldest_uncovered = Gauge(
            "anning_oldest_uncovered_event_age_seconds",
            "Age of the first event upstream has not declared it has taken in", **mode)
        self.current = Gauge("anning_replica_current", "1 while this replica's events are "
                             "current (within the lag allowed, its position in the log known)",
                             **mode)
        self.replica_lag = Gauge("anning_replica_lag_events",
                                 "Events of the replicated log not yet applied here", **mode)
        self.replica_lag_seconds = Gauge(
            "anning_replica_lag_seconds",
            "How long the oldest event not yet applied here has been known of", **mode)
        self.load_refused = Gauge(
            "anning_last_load_refused", "1 when the data directory's last snapshot load (cron's "
            "or Admin.LoadSnapshot) was refused; 0 once one is loaded", **mode)
        self.last_load = Gauge("anning_last_load_timestamp_seconds",
                               "When the last snapshot load ended, loaded or refused", **mode)
        self.scope_names = ("none", "sender", "entity", "global")
        # the labelled children, looked up once: a lookup is a lock and a dict per call
        self.checks_by_code = tuple(self.checks.labels(name) for name in self.scope_names)
        self._latency: dict[str, Any] = {}

    def count_checks(self, code: int) -> None:
        self.checks_by_code[code].inc()

    def latency_of(self, method: str) -> Any:
        child = self._latency.get(method)
        if child is None:
            child = self._latency[method] = self.latency.labels(method)
        return child


def serve_metrics(address: str) -> None:
    """Serve /metrics over HTTP on HOST:PORT (merging the workers' figures when there are)."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = address.rpartition(":")
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    else:
        start_http_server(int(port), addr=host or "127.0.0.1")
