"""The deploy kit (deploy/) tested as operators would use it: unit files verified by systemd and
their commands run for real, the scripts run against real data directories, the alert rules
evaluated by a real Prometheus scraping real servers, the dashboard's every query asked of it.

Paths of the kit (/opt/anning/bin/anning, /var/lib/anning, ports) are replaced by the test's
own (this installation's `anning`, temporary directories, free loopback ports); nothing else
of a command line changes."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anning.server.auth import new_token
from anning.testing import server as h

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KIT_ANNING = "/opt/anning/bin/anning"


def anning_command() -> str:
    """The `anning` of this installation (the one pytest's interpreter has)."""
    beside = Path(sys.executable).with_name("anning")
    found = str(beside) if beside.exists() else shutil.which("anning")
    if not found:
        pytest.skip("no `anning` command installed beside this python")
    return found


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) pairs in order (keys repeat: Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def exec_argv(unit: dict[str, list[tuple[str, str]]]) -> list[str]:
    """The ExecStart command line, split as systemd does for these (no specifiers, no $)."""
    (line,) = values(unit, "Service", "ExecStart")
    assert "%" not in line and "$" not in line, line
    return shlex.split(line)


def unit_environment(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for assignment in values(unit, "Service", "Environment"):
        for item in shlex.split(assignment):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def replace_option(argv: list[str], name: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(name) + 1] = value
    return out


@pytest.fixture(scope="session")
def tokens(tmp_path_factory) -> tuple[Path, str]:
    """A tokens file granting one token every role, and the token."""
    token, line = new_token(["check", "write", "admin"])
    path = tmp_path_factory.mktemp("etc-anning") / "tokens"
    path.write_text(line + "\n")
    return path, token


class UnitServer(h.Server):
    """`anning serve` run with the command line of deploy/systemd/anning.service: only the
    paths (binary, data, tokens) and the two ports are the test's."""

    def __init__(self, data: Path, tokens: Path) -> None:
        super().__init__(data, metrics=True)
        argv = exec_argv(parse_unit(DEPLOY / "systemd" / "anning.service"))
        assert argv[:2] == [KIT_ANNING, "serve"], argv
        argv = [anning_command(), *argv[1:]]
        argv = replace_option(argv, "--data", str(data))
        argv = replace_option(argv, "--listen", self.target)
        argv = replace_option(argv, "--tokens", str(tokens))
        argv = replace_option(argv, "--metrics", f"127.0.0.1:{self.metrics_port}")
        self.args = argv


@pytest.fixture
def unit_server_factory(tokens) -> Iterator[type[UnitServer]]:
    started: list[UnitServer] = []

    class Started(UnitServer):
        def start(self) -> h.Server:
            started.append(self)
            return super().start()

    yield Started
    for server in started:
        server.kill()
