"""The test suite: run against the installed package (`pip install '.[test]'`; pytest imports
test modules in importlib mode, so the source tree is never on the path by accident).

Folders by kind: `unit/` (one piece at a time), `property/` (hypothesis against plain models,
threads sharing one index), `crash/` (power loss through the crash-simulating file layer, real
processes killed with SIGKILL), `service/` (real `anning serve` processes on loopback). Shared
parts live in the package, not in test modules: `anning.model.reference` (the one model of SPEC
§2 and §4), `anning.testing.crashio`, `anning.testing.server`, `anning.testing.scenario`.

Hypothesis profiles: `ci` (the default) and `long` (ANNING_HYPOTHESIS=long: ten times the
examples, for a run before a release).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

import anning

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", parent=settings.get_profile("ci"),
                          max_examples=settings.get_profile("ci").max_examples * 10)
settings.load_profile(os.environ.get("ANNING_HYPOTHESIS", "ci"))


def pytest_report_header() -> str:
    return f"anning {anning.__version__} from {os.path.dirname(anning.__file__)}"
