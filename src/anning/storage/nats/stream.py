"""The JetStream stream of anning's events: its settings, created when missing and checked when
present, and the JetStream API requests the replica makes of it.

The stream keeps every event for `retention` (a few nightly cycles: a replica that was away for
longer needs a snapshot load), on file storage with R=`replicas`, with a duplicate window that
makes a retried publish (same `Nats-Msg-Id`) a no-op, atomic batches for writes of several
events, and neither deletes nor purges: the sequences of the events stay dense (SPEC §4).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anning.errors import InvalidInput, Refused, Unavailable
from anning.storage.nats.client import Connection, Reply

__all__ = ["StreamInfo", "StreamSettings", "api_request", "ensure_stream", "stream_info"]

NANOS = 1_000_000_000
MIN_SERVER = (2, 12, 0)  # atomic batch publish (a write of several events is one batch)
JS_NOT_FOUND = 10059  # stream not found
PEER_SILENT_NANOS = 5 * NANOS  # a peer the leader has not heard from for this long is gone
log = logging.getLogger("anning.nats")


@dataclass(frozen=True)
class StreamSettings:
    urls: str  # nats://host:port,... (user:password@ or a token in them)
    stream: str = "ANNING"
    replicas: int = 3
    retention_seconds: float = 7 * 86400.0
    duplicate_window_seconds: float = 120.0
    max_lag_events: int = 10_000  # past these, a replica says it is stale (health)...
    max_lag_seconds: float = 5.0  # ...or when it has been behind for this long
    write_timeout_seconds: float = 5.0  # a write not acknowledged by then answers UNAVAILABLE
    request_seconds: float = 2.0  # one JetStream API request, one publish attempt

    @property
    def subject(self) -> str:
        return f"anning.{self.stream.lower()}.events"

    def check(self) -> None:
        if not self.stream or not all(c.isalnum() or c in "-_" for c in self.stream):
            raise InvalidInput(f"--stream: {self.stream!r} is not a stream name (letters, "
                               "digits, - and _)")
        if not 1 <= self.replicas <= 5:
            raise InvalidInput(f"--replicas: {self.replicas} is not between 1 and 5")
        if self.retention_seconds < 86400:
            raise InvalidInput(f"--nats-retention: {self.retention_seconds:g} s is less than a "
                               "day: a replica would need a snapshot load after every night")
        if self.max_lag_events < 1 or self.max_lag_seconds <= 0:
            raise InvalidInput(f"--max-lag: {self.max_lag_events} events, "
                               f"{self.max_lag_seconds:g} s: both must be positive")

    def config(self) -> dict[str, Any]:
        return {
            "name": self.stream, "subjects": [self.subject], "storage": "file",
            "num_replicas": self.replicas, "retention": "limits", "discard": "old",
            "max_age": int(self.retention_seconds * NANOS),
            "duplicate_window": int(self.duplicate_window_seconds * NANOS),
            "allow_atomic": True, "allow_direct": True, "deny_delete": True,
            "deny_purge": True, "max_msgs": -1, "max_bytes": -1,
        }


@dataclass(frozen=True)
class StreamInfo:
    first_sequence: int  # of the oldest message it still holds (last + 1 when empty)
    last_sequence: int
    messages: int
    created: str  # when the stream was made: a stream deleted and made again differs here
    leader: str  # the node leading it ("" without quorum)
    quorum: bool = True  # the leader and enough of its peers alive to take a write


def api_request(connection: Connection, subject: str, body: dict[str, Any] | None,
                timeout: float) -> dict[str, Any]:
    """A JetStream API request; Unavailable when nobody answers (no JetStream, no quorum)."""
    reply = connection.request(subject, json.dumps(body).encode() if body else b"", timeout)
    return _json(reply, subject)


def _json(reply: Reply, subject: str) -> dict[str, Any]:
    if reply.status == 503:
        raise Unavailable(f"{subject}: no responders (JetStream not enabled or not reachable)")
    if reply.status:
        raise Unavailable(f"{subject}: status {reply.status} {reply.description}")
    try:
        answer: dict[str, Any] = json.loads(reply.data)
    except ValueError:
        raise Unavailable(f"{subject}: an answer that is not JSON: {reply.data[:80]!r}") \
            from None
    return answer


def stream_info(connection: Connection, settings: StreamSettings) -> StreamInfo | None:
    """The stream's state now; None when there is no such stream."""
    answer = api_request(connection, f"$JS.API.STREAM.INFO.{settings.stream}", None,
                         settings.request_seconds)
    error = answer.get("error")
    if error:
        if error.get("err_code") == JS_NOT_FOUND:
            return None
        raise Unavailable(f"stream {settings.stream}: {error.get('description', error)}")
    return _info_of(answer)


def _info_of(answer: dict[str, Any]) -> StreamInfo:
    state = answer.get("state", {})
    cluster = answer.get("cluster", {})
    leader = str(cluster.get("leader", ""))
    # A leader cut off from its peers goes on saying it leads for a while: count the peers
    # it heard from lately (a write needs a majority of the replicas, the leader one of them)
    peers = cluster.get("replicas") or []
    alive = sum(1 for p in peers if not p.get("offline") and
                (p.get("current") or int(p.get("active", 1 << 62)) < PEER_SILENT_NANOS))
    replicas = int(answer.get("config", {}).get("num_replicas", len(peers) + 1))
    return StreamInfo(int(state.get("first_seq", 0)), int(state.get("last_seq", 0)),
                      int(state.get("messages", 0)), str(answer.get("created", "")),
                      leader, bool(leader) and 1 + alive >= replicas // 2 + 1)


def ensure_stream(connection: Connection, settings: StreamSettings) -> StreamInfo:
    """The stream, created when missing; Refused when the one there is configured so that
    anning's guarantees would not hold (naming the setting)."""
    version = str(connection.info.get("version", "0"))
    if _version(version) < MIN_SERVER:
        raise Refused(f"nats-server {version}: anning needs {'.'.join(map(str, MIN_SERVER))} "
                      "or later (atomic batches; and 2.10.23+ for sync_interval: always)")
    if not connection.info.get("jetstream", True):
        raise Refused(f"{connection.connected_to}: JetStream is not enabled on this server")
    info = stream_info(connection, settings)
    if info is None:
        answer = api_request(connection, f"$JS.API.STREAM.CREATE.{settings.stream}",
                             settings.config(), max(settings.request_seconds, 10.0))
        error = answer.get("error")
        if error:
            raise Unavailable(f"creating stream {settings.stream}: "
                              f"{error.get('description', error)}")
        return _info_of(answer)
    answer = api_request(connection, f"$JS.API.STREAM.INFO.{settings.stream}", None,
                         settings.request_seconds)
    _check_config(settings, answer.get("config", {}))
    return info


def _check_config(settings: StreamSettings, config: dict[str, Any]) -> None:
    problems = []
    if settings.subject not in config.get("subjects", []):
        problems.append(f"subjects {config.get('subjects')} lack {settings.subject}")
    if config.get("storage") != "file":
        problems.append(f"storage {config.get('storage')!r}, not file")
    if int(config.get("num_replicas", 1)) != settings.replicas:
        problems.append(f"{config.get('num_replicas')} replicas, not {settings.replicas}")
    if not config.get("allow_atomic"):
        problems.append("allow_atomic is off (writes of several events need atomic batches)")
    if int(config.get("duplicate_window", 0)) < 10 * NANOS:
        problems.append("a duplicate window under 10 s (a retried publish would be a second "
                        "event)")
    if config.get("deny_delete") is not True or config.get("deny_purge") is not True:
        problems.append("deletes or purges allowed (the sequences would not stay dense)")
    max_age = int(config.get("max_age", 0))
    if max_age and max_age < 86400 * NANOS:
        problems.append(f"max_age {max_age / NANOS:g} s, under a day")
    if config.get("retention", "limits") != "limits":
        problems.append(f"retention {config.get('retention')!r}, not limits (events would go "
                        "as soon as someone consumed them)")
    if int(config.get("max_msgs", -1)) > 0 or int(config.get("max_bytes", -1)) > 0:
        # an operator's cap on the disk; a replica that falls past it says its position is lost
        log.warning("stream %s keeps at most %s messages, %s bytes: a replica away for longer "
                    "than that needs a snapshot load", settings.stream,
                    config.get("max_msgs"), config.get("max_bytes"))
    if problems:
        raise Refused(f"stream {settings.stream} is not as anning needs it: "
                      f"{'; '.join(problems)}")


def created_seconds(created: str) -> float:
    """A stream's `created` time as Unix seconds (0 when it does not parse)."""
    text = created.rstrip("Z")
    if "." in text:  # Go writes nanoseconds; Python reads at most microseconds
        head, _, frac = text.partition(".")
        text = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(text + "+00:00").timestamp()
    except ValueError:
        return 0.0


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.lstrip("v").split("-")[0].split(".")[:3]:
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)
