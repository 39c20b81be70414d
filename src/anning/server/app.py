"""`anning serve`: the gRPC server, its worker processes, health and graceful shutdown.

The parent maps the binary snapshot and replays the write log *before* any gRPC server exists,
then forks the workers (grpc's multiprocessing pattern), which share the mapped pages and each
serve the same port with SO_REUSEPORT. Health is NOT_SERVING, and checks answer UNAVAILABLE,
until a list is loaded (never "not suppressed"). SIGTERM drains: health goes NOT_SERVING and,
as a lame duck, the worker serves on until no call is in flight (at most lame_duck_seconds);
then the port closes, calls still in flight get the rest of the grace, and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anning.engine import Engine
from anning.errors import AnningError
from anning.server.metrics import Metrics
from anning.server.tokens import Tokens
from anning.storage.nats.client import TlsFiles
from anning.storage.nats.stream import StreamSettings

__all__ = ["ServeOptions", "serve"]

log = logging.getLogger("anning.server")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits for it
POLL_SECONDS = 0.5  # how often a worker looks for a snapshot or checkpoint another one wrote
QUIET_SECONDS = 0.25  # SIGTERM: so long without a unary call in flight ends the lame duck
TRANSPORT_OPTIONS = (  # measured in tests/service/test_transport.py
    # Without BDP probing the windows a peer may fill stay fixed: a client that sends on a
    # CheckStream and never reads its answers stops at them (with it, the server took in
    # ~10 MB/s more of its requests, without end). A 12 MB batch over a 10 ms round trip
    # takes ~25% longer.
    ("grpc.http2.bdp_probe", 0),
    # Calls arrived but not yet taken up by the event loop: past 1,000 (grpc's default) a
    # burst was shed as CANCELLED (10,000 Checks at once: ~20% of them); now all are answered
    # (in 2.8 s, +124 MB at the peak); --max-concurrent-rpcs sheds with RESOURCE_EXHAUSTED.
    ("grpc.server.max_pending_requests", 10_000),
    ("grpc.server.max_pending_requests_hard_limit", 20_000),
)


@dataclass
class ServeOptions:
    data: str = "./anning-data"
    listen: str = "127.0.0.1:50051"
    workers: int = 0  # 0: one per core
    threads: int = 16
    tokens: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    metrics: str | None = None
    reflection: bool = False
    demo: bool = True
    demo_entries: int = 100_000
    max_batch: int = 10_000
    max_message_bytes: int = 64 << 20
    max_concurrent_rpcs: int | None = None  # past it: RESOURCE_EXHAUSTED (costs ~100 us a call)
    grace_seconds: float = 10.0  # from SIGTERM, for the calls in flight
    lame_duck_seconds: float = 2.0  # of it, at most, serving on while health says NOT_SERVING
    checkpoint_bytes: int = 8 << 20  # fold the log at this size: ~200k events, ~80 MB of dicts
    checkpoint_every: float = 5.0  # seconds between looks at the log's size
    replica: StreamSettings | None = None  # events on a NATS JetStream stream (SPEC §8)
    nats_tls: TlsFiles | None = None
    # where Admin.LoadSnapshot may read, besides the data directory (anning.server.loaddirs)
    load_dirs: list[str] = field(default_factory=list)


def _listen_address(options: ServeOptions) -> str:
    host, _, port = options.listen.rpartition(":")
    if not options.tokens and host not in LOOPBACK:
        log.warning("no --tokens: listening on loopback only (127.0.0.1:%s), not %s", port, host)
        return f"127.0.0.1:{port}"
    return options.listen


def serve(options: ServeOptions) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    workers = options.workers or os.cpu_count() or 1
    if options.replica is not None:
        # Workers of one replica would each read the stream on their own: a check in one
        # could start after another acknowledged a write it has not read yet. A replica is
        # one process; run several replicas (each its own data directory) behind the balancer.
        if options.workers > 1:
            log.error("--nats: a replica is one worker (--workers 1); run more replicas")
            return 2
        workers = 1
    data = Path(options.data)
    tokens = None
    if options.tokens:  # read once, before any worker: a bad file stops the start, clearly
        try:
            tokens = Tokens.load(options.tokens)
        except (OSError, ValueError) as exc:
            log.error("cannot serve with --tokens %s: %s", options.tokens, exc)
            return 2
    if options.metrics and workers > 1:
        from anning.server.metrics import prepare_multiprocess
        from anning.storage.layout import DataDir

        prepare_multiprocess(DataDir(data).metrics)
    # Everything below the server first: the list mapped, the log replayed; no gRPC yet.
    from anning.demo import ensure_snapshot
    from anning.storage.layout import DataDir

    if options.demo and not DataDir(data).snapshot.exists():
        path, _ = ensure_snapshot(data, options.demo_entries)
        log.info("generated a demo list of %d entries at %s", options.demo_entries, path)
    try:
        engine = Engine(data_dir=data, source=_event_source(options, data))
    except AnningError as exc:
        log.error("cannot start: %s", exc)
        return 2
    if engine.open_snapshot():
        log.info("serving %s: %d entries", DataDir(data).snapshot, len(engine.index))
    else:
        log.warning("no snapshot in %s: not ready until Admin.LoadSnapshot", data)
    address = _listen_address(options)
    # What is loaded lives as long as the server: out of the collector's sight, a full
    # collection no longer walks it (a stall of milliseconds under every call in flight), and
    # forked workers do not write to its pages (which would unshare them) when they collect.
    gc.collect()
    gc.freeze()
    if workers == 1:
        if options.metrics:
            from anning.server.metrics import serve_metrics

            serve_metrics(options.metrics)
        return _run_worker(engine, options, address, workers, tokens)
    return _supervise(engine, options, address, workers, tokens)


def _event_source(options: ServeOptions, data: Path) -> Any:
    """The replicated log of `--nats` (None: the data directory's own write log)."""
    if options.replica is None:
        return None
    from anning.storage.layout import DataDir
    from anning.storage.nats import NatsEventSource

    log.info("events on NATS stream %s (R=%d) via %s", options.replica.stream,
             options.replica.replicas, options.replica.urls.split("@")[-1])
    return NatsEventSource(DataDir(data), options.replica, tls=options.nats_tls)


def _supervise(engine: Engine, options: ServeOptions, address: str, workers: int,
               tokens: Tokens | None) -> int:
    children: dict[int, int] = {}
    stopping = threading.Event()

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                engine.after_fork()
                code = _run_worker(engine, options, address, workers, tokens)
            except BaseException:
                log.exception("worker %d failed", slot)
                code = 1
            os._exit(code)
        children[pid] = slot

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        spawn(slot)
    if options.metrics:
        from anning.server.metrics import serve_metrics

        serve_metrics(options.metrics)
    log.info("%d workers on %s", workers, address)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        slot = children.pop(pid)
        if not stopping.is_set():
            log.error("worker %d (pid %d) exited with %d; restarting it", slot, pid, code)
            time.sleep(0.5)
            spawn(slot)
        elif os.waitstatus_to_exitcode(code) not in (0, -signal.SIGTERM):
            status = 1
    return status


def _credentials(options: ServeOptions) -> Any:  # grpc.ServerCredentials | None
    import grpc

    if not options.tls_cert:
        return None
    key = Path(options.tls_key or "").read_bytes()
    cert = Path(options.tls_cert).read_bytes()
    ca = Path(options.client_ca).read_bytes() if options.client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


def _run_worker(engine: Engine, options: ServeOptions, address: str, workers: int,
                tokens: Tokens | None = None) -> int:
    return asyncio.run(_serve_worker(engine, options, address, workers, tokens))


async def _serve_worker(engine: Engine, options: ServeOptions, address: str,
                        workers: int, tokens: Tokens | None = None) -> int:
    """One worker: a grpc.aio server on one event loop, one thread that writes (group commit)
    and one that checkpoints."""
    import grpc
    from grpc_health.v1 import _async as health
    from grpc_health.v1 import health_pb2

    from anning.server.auth import AuthInterceptor
    from anning.server.loaddirs import LoadDirs
    from anning.server.servicers import CallsInFlight, Limits, build_handlers
    from anning.server.writes import WriteQueue

    loop = asyncio.get_running_loop()
    # The loop gives up the GIL at every syscall and must wait for it back; behind a thread
    # folding a checkpoint or validating a big batch that wait was the default 5 ms a time,
    # and a check makes several (measured: stalls of 420-490 ms at an 11 MB checkpoint under
    # 10,000-event batches, 150-290 ms at 0.5 ms; the unary write rate moved within noise).
    sys.setswitchinterval(SWITCH_INTERVAL)
    # the one blocking call (a snapshot load) runs here, never on the loop
    loop.set_default_executor(futures.ThreadPoolExecutor(options.threads, "anning-admin"))
    metrics = Metrics()
    interceptors = []
    if tokens is not None:
        interceptors.append(AuthInterceptor(
            tokens, lambda method, code: metrics.errors.labels(method, code).inc()))
    limits = Limits(max_batch=options.max_batch, max_message_bytes=options.max_message_bytes,
                    load_dirs=LoadDirs([options.data, *options.load_dirs]))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 1 if workers > 1 else 0),
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
            *TRANSPORT_OPTIONS,
        ],
        maximum_concurrent_rpcs=options.max_concurrent_rpcs,
    )
    writes = WriteQueue(engine, loop)
    calls = CallsInFlight()
    health_servicer = health.HealthServicer()
    listed = None
    if options.reflection:
        from grpc_reflection.v1alpha import reflection

        from anning.v1 import anning_pb2

        listed = [*(anning_pb2.DESCRIPTOR.services_by_name[s].full_name
                    for s in ("Suppression", "OptOuts", "Admin")),
                  health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                  reflection.SERVICE_NAME]
    for service, handlers in build_handlers(engine, metrics, limits, calls, workers, writes,
                                            health=health_servicer, reflection=listed).items():
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
        server.add_registered_method_handlers(service, handlers)
    done = threading.Event()

    async def publish_health() -> None:
        serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                                health_pb2.HealthCheckResponse.NOT_SERVING)
        condition = engine.status().source
        ready = serving if engine.ready else not_serving
        await health_servicer.set("anning.v1.Admin", ready)
        # checks: a replica behind its stream, or whose position is lost, sends its callers
        # elsewhere (it answers from what it has, or not at all when the position is lost)
        checks = ready if condition.current else not_serving
        for service in ("", "anning.v1.Suppression"):
            await health_servicer.set(service, checks)
        # writes: after a disk failure until an operator acts; with NATS, while the stream
        # cannot acknowledge (unreachable, no quorum)
        await health_servicer.set("anning.v1.OptOuts",
                                  ready if condition.writable else not_serving)

    # Before the port opens: a new HealthServicer says SERVING for "" until told otherwise.
    await publish_health()
    credentials = _credentials(options)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        log.error("cannot listen on %s", address)
        return 2
    await server.start()
    log.info("pid %d listening on %s%s%s", os.getpid(), address,
             " with TLS" if credentials else "", "" if options.tokens else " (no tokens)")

    async def watch() -> None:
        while not done.is_set():
            await publish_health()
            _update_gauges(engine, metrics)
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    engine.poll_in_background = True
    threading.Thread(target=_housekeeping, args=(engine, options, done), name="housekeeping",
                     daemon=True).start()
    stopping: list[asyncio.Task[None]] = []

    async def drain(signum: int) -> None:
        log.info("pid %d draining (signal %d)", os.getpid(), signum)
        done.set()
        await health_servicer.enter_graceful_shutdown()
        # Lame duck: health says NOT_SERVING (balancers steer away) while the port stays open
        # and calls in flight end before the goodbye (see CallsInFlight for why).
        started = time.monotonic()
        lame_duck = min(options.lame_duck_seconds, options.grace_seconds)
        if not await calls.quiet(QUIET_SECONDS, lame_duck):
            log.info("pid %d still busy after %.1fs of lame duck: saying goodbye",
                     os.getpid(), lame_duck)
        await server.stop(max(0.0, options.grace_seconds - (time.monotonic() - started)))

    def on_signal(signum: int) -> None:
        if not stopping:  # the first signal drains; another one changes nothing
            stopping.append(asyncio.create_task(drain(signum)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await server.wait_for_termination()
    done.set()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    # A call whose last answer is still going out is a task on this loop: let it finish, or
    # asyncio.run would cancel it as the loop closes (the caller would see the call cut off).
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=options.grace_seconds)
    writes.close()  # every call is answered; what was queued is written
    if options.replica is not None:
        # the position written down: a restart asks the stream only for what came after
        try:
            engine.checkpoint(min_log_bytes=1)
        except Exception as exc:
            log.warning("checkpoint at stop failed: %r", exc)
    log.info("pid %d stopped", os.getpid())
    return 0


def _housekeeping(engine: Engine, options: ServeOptions, done: threading.Event) -> None:
    """Off the event loop: take up a snapshot or checkpoint another process wrote (seconds of
    checking for a big list, which no check should wait behind; checks answer from the list
    they have meanwhile), and fold the write log into the checkpoint when it has grown, so
    memory and restart time stay bounded (every worker looks; a lock file lets one at a time
    do it)."""
    last_checkpoint = time.monotonic()
    while not done.wait(POLL_SECONDS):
        try:
            engine.poll()
        except Exception as exc:  # a damaged file is refused: the list served stays
            log.warning("taking up a new snapshot or checkpoint failed: %r", exc)
        if time.monotonic() - last_checkpoint < options.checkpoint_every:
            continue
        last_checkpoint = time.monotonic()
        try:
            report = engine.checkpoint(min_log_bytes=options.checkpoint_bytes)
        except Exception as exc:  # a failed checkpoint leaves the log as it was: try later
            log.warning("checkpoint failed: %r", exc)
            continue
        if report is not None:
            log.info("checkpoint: %d events held, segments up to %d retired (%d bytes) in "
                     "%.2f s", report.rows, report.covers, report.retired_bytes, report.seconds)


def _update_gauges(engine: Engine, metrics: Metrics) -> None:
    try:
        engine.refresh()
        status = engine.status()
    except Exception as exc:  # a gauge must never take the worker down
        log.warning("status for metrics failed: %r", exc)
        return
    metrics.ready.set(1 if status.ready else 0)
    metrics.writes_ok.set(1 if status.writes_ok else 0)
    metrics.current.set(1 if status.source.current else 0)
    metrics.replica_lag.set(status.source.lag_events)
    metrics.replica_lag_seconds.set(status.source.lag_seconds)
    metrics.last_sequence.set(status.last_sequence)
    metrics.load_refused.set(1 if status.last_refusal else 0)
    record = engine.last_load()
    if record is not None:
        metrics.last_load.set(record.at)
    if status.ready:
        metrics.entries.set(status.entries)
        metrics.snapshot_age.set(status.age_seconds)
        metrics.events.set(status.events)
        metrics.feed_lag.set(status.feed_lag)
        metrics.oldest_uncovered.set(status.oldest_uncovered_age_seconds)
    metrics.log_lag.set(engine.log_lag())
