"""deploy/prometheus and deploy/grafana: the alert rules checked and unit-tested by promtool,
then evaluated by a real Prometheus (Debian's `prometheus`) scraping two real servers started
with the server unit's command line: one serving a list 30 h old with an event upstream has not
had for 27 h and a refused nightly load, one with no list that callers keep asking. The alerts
those conditions should raise must fire, the others stay silent, and fixed conditions clear.
Every query of the Grafana dashboard is then asked of that Prometheus and must return data, on
metric names the server really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import zstandard

from anning.client import Client
from anning.testing import server as h

from .conftest import DEPLOY, UnitServer, anning_command, exec_argv, parse_unit, unit_environment

RULES = DEPLOY / "prometheus" / "anning-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "anning-dashboard.json"
HOUR_MS = 3_600_000
T = h.T


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus)")
    return found


def test_promtool_checks_the_rules_and_their_unit_tests():
    promtool = _tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([promtool, "test", "rules", "anning-alerts.test.yml"],
                         cwd=RULES.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_promtool_checks_the_example_configuration(tmp_path):
    promtool = _tool("promtool")
    config = (DEPLOY / "prometheus" / "prometheus.example.yml").read_text()
    config = config.replace("/etc/prometheus/rules/anning-alerts.yml", str(RULES))
    (tmp_path / "prometheus.yml").write_text(config)
    out = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# -- a real Prometheus over real servers ------------------------------------------------------


class Prometheus:
    """`prometheus` on a free loopback port, scraping `targets` every second as job "anning"
    and evaluating `rules` every second."""

    def __init__(self, folder: Path, targets: list[str], rules: Path) -> None:
        self.port = h.free_port()
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                             "evaluation_interval": "1s"},
                  "rule_files": [str(rules)],
                  "scrape_configs": [{"job_name": "anning",
                                      "static_configs": [{"targets": targets}]}]}
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [_tool("prometheus"), f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert self.proc.poll() is None, (folder / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus not ready in 60 s"
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> object:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url(f"/api/v1/{path}{query}"), timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def wait_scraping(self, targets: int, limit: float = 60.0) -> None:
        """Until every target has been scraped (targets are taken up some seconds after
        start: what happens before is never seen, a counter's first sample is its base)."""
        deadline = time.monotonic() + limit
        while True:
            data = self.api("query", query='up{job="anning"} == 1')
            assert isinstance(data, dict)
            if len(data["result"]) == targets:
                return
            assert time.monotonic() < deadline, f"prometheus scrapes no target: {data}"
            time.sleep(0.2)

    def firing(self) -> set[tuple[str, str, str]]:
        """(alertname, instance, severity) of every firing alert."""
        data = self.api("alerts")
        assert isinstance(data, dict)
        return {(a["labels"]["alertname"], a["labels"].get("instance", ""),
                 a["labels"].get("severity", "")) for a in data["alerts"]
                if a["state"] == "firing"}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@dataclass
class Stack:
    prometheus: Prometheus
    stale: UnitServer  # serves a list 30 h old
    empty: UnitServer  # no list at all
    token: str
    snapshots: Path  # the stale server's nightly snapshot folder
    load: tuple[list[str], dict[str, str]]  # the nightly load script and its environment

    def instance(self, server: UnitServer) -> str:
        return f"127.0.0.1:{server.metrics_port}"


def _immediate(rules: str) -> str:
    """The rules as they are, each firing as soon as its expression holds (`for: 0s`): the
    expressions are what is tested here; their `for` is promtool's unit tests' business."""
    return re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", rules)


def _nightly_load(stack: Stack) -> subprocess.CompletedProcess[str]:
    command, env = stack.load
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tokens) -> Iterator[Stack]:
    _tool("prometheus")
    root = tmp_path_factory.mktemp("alerts")
    now_ms = int(time.time() * 1000)
    numbers, scopes, categories = (list(c) for c in zip(*h.SNAPSHOT, strict=True))
    h.write_snapshot(root / "stale", numbers, scopes, categories, h.ENTITIES,
                     as_of_ms=now_ms - 30 * HOUR_MS)
    servers = [UnitServer(root / "stale", tokens[0]), UnitServer(root / "empty", tokens[0])]
    prometheus = None
    try:
        for server in servers:
            server.start()
        servers[0].wait_health(h.SERVING, timeout=60)
        servers[1].wait_health(h.NOT_SERVING, timeout=60)
        snapshots = root / "snapshots"
        snapshots.mkdir()
        unit = parse_unit(DEPLOY / "systemd" / "anning-load.service")
        env = {"PATH": "/usr/bin:/bin", **unit_environment(unit), "ANNING": anning_command(),
               "ANNING_DATA": str(root / "stale"), "ANNING_SNAPSHOTS": str(snapshots)}
        script = str(DEPLOY / "bin" / Path(exec_argv(unit)[0]).name)
        rules = root / "rules.yml"
        rules.write_text(_immediate(RULES.read_text()))
        prometheus = Prometheus(root, [f"127.0.0.1:{s.metrics_port}" for s in servers], rules)
        prometheus.wait_scraping(len(servers))
        yield Stack(prometheus, servers[0], servers[1], tokens[1], snapshots, ([script], env))
    finally:
        if prometheus is not None:
            prometheus.stop()
        for server in servers:
            server.kill()


def _wait_for(stack: Stack, wanted: set[tuple[str, str, str]], gone: set[tuple[str, str, str]],
              limit: float = 60.0) -> set[tuple[str, str, str]]:
    deadline = time.monotonic() + limit
    while True:
        firing = stack.prometheus.firing()
        if wanted <= firing and not gone & firing:
            return firing
        if time.monotonic() > deadline:
            raise AssertionError(f"after {limit:.0f} s: firing {sorted(firing)}; wanted "
                                 f"{sorted(wanted - firing)}, not {sorted(gone & firing)}")
        time.sleep(0.5)


def test_alerts_fire_on_real_conditions_and_clear(stack):
    stale, empty = stack.instance(stack.stale), stack.instance(stack.empty)
    now_ms = int(time.time() * 1000)
    with Client(stack.stale.target, stack.token, timeout=T) as client:
        # an opt-out a user sent 27 h ago, which upstream has never taken in
        client.opt_out("13800000077", "京东", at_ms=now_ms - 27 * HOUR_MS, source="reply")
        assert client.check("京东", "13800000001").suppressed
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):  # the caller's error
            client.check("京东", "not-a-number")
    # tonight's file never came: the nightly load is refused
    out = _nightly_load(stack)
    assert out.returncode == 4, out.stdout + out.stderr
    with Client(stack.empty.target, stack.token, timeout=T, retries=0) as client:
        end = time.monotonic() + 4  # a port keeps asking the server with no list: the
        while time.monotonic() < end:  # error rate is over scrapes a second apart
            with pytest.raises(Exception, match="UNAVAILABLE"):
                client.check("京东", "13800000001")
            time.sleep(0.05)

    firing = _wait_for(stack, wanted={
        ("AnningSnapshotStale", stale, "warning"),
        ("AnningFeedBehind", stale, "warning"),
        ("AnningLoadRefused", stale, "warning"),
        ("AnningNotReady", empty, "page"),
        ("AnningErrors", empty, "page"),
    }, gone={
        ("AnningSnapshotStale", stale, "page"),  # 30 h: not two nights yet
        ("AnningErrors", stale, "page"),  # bad input is the caller's
        ("AnningLoadRefused", empty, "warning"),
    })
    assert not {a for a in firing if a[0] in ("AnningDown", "AnningWritesStopped",
                                              "AnningFeedBehind") and a[2] == "page"}, firing
    assert not {a for a in firing if a[0] == "AnningDown" or a[0] == "AnningWritesStopped"}

    # the file comes after all: loaded, and the stale-list and refusal alerts clear
    today = datetime.now(ZoneInfo("Asia/Shanghai"))
    rows = [f"{n},{s},{c}" for n, s, c in h.SNAPSHOT] + \
        [f"1390000{i:04d},shop,marketing" for i in range(50)]
    (stack.snapshots / f"{today:%Y%m%d}.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("number,sender,category\n" + "\n".join(rows) + "\n").encode()))
    out = _nightly_load(stack)
    assert out.returncode == 0, out.stdout + out.stderr
    _wait_for(stack, wanted={("AnningFeedBehind", stale, "warning")}, gone={
        ("AnningSnapshotStale", stale, "warning"), ("AnningLoadRefused", stale, "warning")})
    with Client(stack.stale.target, stack.token, timeout=T) as client:
        assert client.status().entries == len(rows) + 1  # the rows and the 27-h-old opt-out


def test_every_rule_is_loaded_and_healthy(stack):
    data = stack.prometheus.api("rules")
    assert isinstance(data, dict)
    rules = [r for g in data["groups"] for r in g["rules"]]
    names = {r["name"] for r in rules}
    assert names == {"AnningDown", "AnningNotReady", "AnningWritesStopped",
                     "AnningSnapshotStale", "AnningLoadRefused", "AnningFeedBehind",
                     "AnningReplicaNotCurrent", "AnningFeedLag", "AnningErrors", "AnningSlowChecks",
                     "AnningSlowWrites"}
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]


def _exported_names(server: UnitServer) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    text = h.metrics_text(server.metrics_port)
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(anning_[a-z_]+)\b", expr))


def test_rules_and_dashboard_name_only_exported_metrics(stack):
    with Client(stack.stale.target, stack.token, timeout=T) as client, \
            pytest.raises(Exception, match="INVALID_ARGUMENT"):  # anning_errors_total
        client.check("京东", "not-a-number")
    exported = _exported_names(stack.stale)
    rules = _metric_names(RULES.read_text())
    assert rules and rules <= exported, rules - exported
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = set().union(*map(_metric_names, exprs))
    assert used <= exported, used - exported
    # and the dashboard shows every metric anning has (a new one gets a panel)
    families = {re.sub(r"_(bucket|count|sum|created|total)$", "", n) for n in exported
                if n.startswith("anning_")}
    shown = {re.sub(r"_(bucket|count|sum|created|total)$", "", n) for n in used}
    assert families <= shown, families - shown


def test_every_dashboard_query_returns_data(stack):
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    instances = stack.prometheus.api("query", query=variables["instance"]["definition"]
                                      .replace("label_values(", "group by (instance) (")
                                      .replace(", instance)", ")"))
    assert isinstance(instances, dict) and len(instances["result"]) == 2, instances
    with Client(stack.stale.target, stack.token, timeout=T) as client:
        end = time.monotonic() + 3  # a few seconds of calls: rates and quantiles over them
        while time.monotonic() < end:
            client.check("京东", "13800000001")
            client.check("淘宝", "13800000009")
            time.sleep(0.01)
    time.sleep(2.5)  # scraped twice since
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$instance", ".*").replace("$__rate_interval", "30s")
            data = stack.prometheus.api("query", query=expr)
            assert isinstance(data, dict)
            if not data["result"]:
                empty.append((panel["title"], expr))
    assert not empty, empty
