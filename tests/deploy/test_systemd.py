"""deploy/systemd and deploy/bin: the units verified by systemd itself (syntax, commands,
sandboxing, calendars), the server's command line served and drained for real, the nightly
load and the change-feed export run against real data directories."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import zstandard

from anning.client import Client
from anning.storage.layout import DataDir
from anning.storage.loadrecord import read_load_record
from anning.storage.snapshot import snapshot_summary
from anning.testing import server as h

from .conftest import (
    DEPLOY,
    KIT_ANNING,
    anning_command,
    exec_argv,
    option,
    parse_unit,
    unit_environment,
    values,
)

UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + \
    sorted((DEPLOY / "systemd").glob("*.timer"))
SERVICES = [p for p in UNITS if p.suffix == ".service"]
CHINA = ZoneInfo("Asia/Shanghai")
T = h.T


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return tool


def _installed_copy(tmp_path: Path) -> Path:
    """The units as installed, the kit's paths pointing at this installation's commands
    (systemd-analyze verify checks that every ExecStart is an executable)."""
    out = tmp_path / "units"
    out.mkdir()
    for path in UNITS:
        text = path.read_text()
        text = text.replace("/opt/anning/bin/anning-", f"{DEPLOY}/bin/anning-")
        text = text.replace(f"{KIT_ANNING} ", f"{anning_command()} ")
        (out / path.name).write_text(text)
    return out


def test_the_kit_has_its_units():
    names = {p.name for p in UNITS}
    assert names == {"anning.service", "anning-load.service", "anning-load.timer",
                     "anning-export.service", "anning-export.timer"}, names


def test_systemd_verifies_every_unit(tmp_path):
    tool = _analyze()
    units = _installed_copy(tmp_path)
    out = subprocess.run([tool, "verify", "--man=no", *sorted(str(p) for p in units.iterdir())],
                         capture_output=True, text=True, cwd=units, timeout=60)
    # any warning (an unknown key, a bad value, a missing command) fails the unit
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_systemd_refuses_a_broken_unit(tmp_path):
    """The check above can fail: a typo in a key and a command that is not there."""
    tool = _analyze()
    bad = tmp_path / "broken.service"
    bad.write_text((DEPLOY / "systemd" / "anning.service").read_text()
                   .replace("TimeoutStopSec=", "TimeoutStopSecs="))
    out = subprocess.run([tool, "verify", "--man=no", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert "TimeoutStopSecs" in out.stderr and "/opt/anning/bin/anning" in out.stderr, out.stderr


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_services_are_sandboxed(path, tmp_path):
    """systemd's own exposure score (0 best, 10 worst; --threshold counts tenths) stays
    "OK" (at most 5)."""
    tool = _analyze()
    units = _installed_copy(tmp_path)
    out = subprocess.run([tool, "security", "--offline=true", "--threshold=50",
                          str(units / path.name)], capture_output=True, text=True,
                         cwd=units, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    unit = parse_unit(path)
    assert values(unit, "Service", "User") == ["anning"]
    assert values(unit, "Service", "NoNewPrivileges") == ["yes"]


@pytest.mark.parametrize("timer, service, at", [("anning-load.timer", "anning-load.service",
                                                 "01:45:00"),
                                                ("anning-export.timer", "anning-export.service",
                                                 "01:00:00")])
def test_timers_run_their_service_at_night_china_time(timer, service, at):
    unit = parse_unit(DEPLOY / "systemd" / timer)
    (calendar,) = values(unit, "Timer", "OnCalendar")
    assert calendar == f"*-*-* {at} Asia/Shanghai"
    assert values(unit, "Timer", "Unit") == [service] and (DEPLOY / "systemd" / service).exists()
    assert values(unit, "Timer", "Persistent") == ["true"]  # a night missed runs at boot
    assert values(unit, "Install", "WantedBy") == ["timers.target"]
    out = subprocess.run([_analyze(), "calendar", "--iterations=2", calendar],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "TZ": "UTC"})
    assert out.returncode == 0, out.stderr
    # the next two elapses (printed in UTC), in China time: consecutive days at `at`
    elapses = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
               .astimezone(CHINA) for m in re.findall(r"\w{3} (\S+ \S+) UTC", out.stdout)]
    assert len(elapses) == 2, out.stdout
    assert [f"{e:%H:%M:%S}" for e in elapses] == [at, at], out.stdout
    assert (elapses[1] - elapses[0]).days == 1


def test_the_server_unit_serves_with_tokens_and_drains_on_its_kill_signal(tmp_path, tokens,
                                                                         unit_server_factory):
    unit = parse_unit(DEPLOY / "systemd" / "anning.service")
    argv = exec_argv(unit)
    assert argv[:2] == [KIT_ANNING, "serve"] and option(argv, "--data") == "/var/lib/anning"
    assert values(unit, "Service", "StateDirectory") == ["anning"]  # /var/lib/anning
    assert values(unit, "Service", "KillSignal") == ["SIGTERM"]
    timeout = float(values(unit, "Service", "TimeoutStopSec")[0])
    data = tmp_path / "data"
    h.write_main_snapshot(data)
    server = unit_server_factory(data, tokens[0])
    server.start()
    server.wait_health(h.SERVING, timeout=60)
    with Client(server.target, tokens[1], timeout=T) as client:
        assert client.check("京东", "13800000001").suppressed
        assert not client.check("京东", "13800000009").suppressed
        assert client.status().workers == (os.cpu_count() or 1)  # one a core, the default
    with Client(server.target, None, timeout=T) as anonymous, \
            pytest.raises(Exception, match="UNAUTHENTICATED"):  # --tokens: no token, no answer
        anonymous.check("京东", "13800000001")
    metrics = h.metrics_text(server.metrics_port)
    assert h.samples(metrics, "anning_ready") == {(): 1.0}
    started = time.monotonic()
    assert server.stop(timeout) == 0, server.output()  # SIGTERM: drained, exit 0
    assert time.monotonic() - started < timeout
    h.assert_clean_log(server)


# -- the nightly load ---------------------------------------------------------------------------


def _script_env(service: str, **paths: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment the unit gives its script, with the test's paths."""
    unit = parse_unit(DEPLOY / "systemd" / service)
    (script,) = exec_argv(unit)
    assert script.startswith("/opt/anning/bin/")
    local = DEPLOY / "bin" / Path(script).name
    assert os.access(local, os.X_OK), f"{local} is not executable"
    env = {"PATH": os.environ["PATH"], **unit_environment(unit)}
    assert env["ANNING"] == KIT_ANNING
    env["ANNING"] = anning_command()
    env.update(paths)
    return [str(local)], env


def _today() -> datetime:
    return datetime.now(CHINA)


def _snapshot_file(folder: Path, rows: list[str]) -> Path:
    """Today's (China's date) compressed snapshot, as upstream drops it."""
    path = folder / f"{_today():%Y%m%d}.csv.zst"
    text = "number,sender,category\n" + "".join(r + "\n" for r in rows)
    path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    return path


def test_nightly_load_script_loads_todays_file_and_records_a_refusal(tmp_path):
    data, snapshots = tmp_path / "data", tmp_path / "snapshots"
    snapshots.mkdir()
    command, env = _script_env("anning-load.service", ANNING_DATA=str(data),
                               ANNING_SNAPSHOTS=str(snapshots),
                               ANNING_LOAD_OPTIONS="--max-reject-ratio 0.05 --max-shrink 0.5")
    assert env["TZ"] == "Asia/Shanghai"
    rows = [f"1380000{i:04d},shop{i % 7},marketing" for i in range(200)]
    rows += ["139000000,shop1,marketing"]  # a bad number: 1 of 201 rejected, under 5%
    _snapshot_file(snapshots, rows)
    (snapshots / "entities.csv").write_text("sender,entity\nshop1,Group\nshop2,Group\n")
    (snapshots / f"{_today():%Y%m%d}.events-through").write_text("0\n")
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = snapshot_summary(DataDir(data).snapshot)
    assert summary.entries == 200
    assert datetime.fromisoformat(summary.meta["as_of"]) == \
        _today().replace(hour=0, minute=0, second=0, microsecond=0)
    record = read_load_record(DataDir(data))
    assert record is not None and record.refused == "" and record.entries == 200

    # the next night upstream sends a list of a third of the size: refused, the list stays
    (snapshots / f"{_today():%Y%m%d}.csv.zst").unlink()
    _snapshot_file(snapshots, rows[:60])
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "shrink" in out.stderr, out.stderr
    assert snapshot_summary(DataDir(data).snapshot).entries == 200
    record = read_load_record(DataDir(data))
    assert record is not None and "shrink" in record.refused

    # and on a night with no file at all: refused too (a refusal the alert sees), not a crash
    (snapshots / f"{_today():%Y%m%d}.csv.zst").unlink()
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 4, out.stdout + out.stderr
    record = read_load_record(DataDir(data))
    assert record is not None and f"{_today():%Y%m%d}.csv.zst" in record.refused


# -- the change-feed export ---------------------------------------------------------------------


def test_feed_export_script_sends_each_event_once_beside_the_running_server(
        tmp_path, tokens, unit_server_factory):
    data, feed = tmp_path / "data", tmp_path / "feed"
    feed.mkdir()
    h.write_main_snapshot(data)
    server = unit_server_factory(data, tokens[0])
    server.start()
    server.wait_health(h.SERVING, timeout=60)
    command, env = _script_env("anning-export.service", ANNING_DATA=str(data),
                               ANNING_FEED=str(feed))

    def export() -> subprocess.CompletedProcess[str]:
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def rows_of(path: Path) -> list[dict[str, str]]:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    with Client(server.target, tokens[1], timeout=T) as client:
        acks = [client.opt_out(f"1370000{i:04d}", "京东, 超市", "all").sequence
                for i in range(5)]  # a comma in the sender: quoted in the CSV
        export()
        (first,) = feed.glob("events-*.csv")
        rows = rows_of(first)
        assert [int(r["seq"]) for r in rows] == acks
        assert {r["sender"] for r in rows} == {"京东, 超市"}
        assert (feed / "last-sent").read_text() == f"{acks[-1]}\n"

        time.sleep(1.1)  # file names are by the second
        export()  # nothing new: no file, last-sent unchanged
        assert list(feed.glob("events-*.csv")) == [first]
        assert (feed / "last-sent").read_text() == f"{acks[-1]}\n"

        more = client.opt_out("13700009999", "淘宝").sequence
        export()
        (second,) = set(feed.glob("events-*.csv")) - {first}
        assert [int(r["seq"]) for r in rows_of(second)] == [more]
        assert (feed / "last-sent").read_text() == f"{more}\n"
    assert not list(feed.glob("*.partial")) and not (feed / "last-sent.new").exists()
    assert server.stop() == 0
