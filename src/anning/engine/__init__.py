"""The engine: what is served (a snapshot and the events on top), writes, taking up others'."""

from anning.engine.engine import CheckpointReport, Engine, EngineStatus
from anning.engine.serving import Explanation, ServingState
from anning.engine.writes import ReplyOutcome

__all__ = ["CheckpointReport", "Engine", "EngineStatus", "Explanation", "ReplyOutcome",
           "ServingState"]
