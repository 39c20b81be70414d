"""`anning smpp-gate`: run the gate, or hash a bind password for its configuration file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import getpass
import logging
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the gate's modules are imported when it runs, not when the CLI starts
    from anning.gate.config import GateConfig

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="run", choices=["run", "hash-password"],
                   help="run the gate (default), or print a hashed password for the config")
    p.add_argument("--config", help="the gate's TOML file (accounts, upstream, anning)")
    p.add_argument("--listen", help="HOST:PORT for the ESMEs (overrides gate.listen)")
    p.add_argument("--upstream", help="the SMSC's HOST:PORT (overrides upstream.address)")
    p.add_argument("--target", help="the anning server (overrides anning.target)")
    p.add_argument("--data", help="check with an in-process engine on this data directory "
                                  "instead of over gRPC")
    p.add_argument("--metrics", help="serve Prometheus metrics on HOST:PORT (PORT: loopback)")
    p.add_argument("--pass-through", action="store_true",
                   help="no checks at all: a plain proxy (the benchmark's peer)")


def _effective(config: GateConfig, args: argparse.Namespace) -> GateConfig:
    from anning.gate.config import ConfigError

    upstream = config.upstream
    if args.upstream:
        host, _, port = args.upstream.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--upstream: {args.upstream!r} is not HOST:PORT")
        upstream = dataclasses.replace(upstream, host=host, port=int(port))
    anning = config.anning
    if args.target:
        anning = dataclasses.replace(anning, target=args.target, data=None)
    if args.data:
        anning = dataclasses.replace(anning, data=args.data)
    return dataclasses.replace(
        config, listen=args.listen or config.listen, upstream=upstream, anning=anning,
        metrics=args.metrics or config.metrics,
        checks=config.checks and not args.pass_through)


async def _serve(config: GateConfig) -> None:
    from anning.gate.backend import make_backend
    from anning.gate.gate import Gate
    from anning.gate.metrics import GateMetrics, serve_metrics

    metrics = GateMetrics()
    if config.metrics:
        serve_metrics(metrics, config.metrics)
    backend = make_backend(config.anning.target, config.anning.token, config.anning.timeout,
                           config.anning.data) if config.checks else None
    gate = Gate(config, backend, metrics)
    await gate.start()
    # what start-up made (modules, the engine's list in-process) out of the collector's
    # sight: a full collection walking it would stall every session's submits at once
    gc.collect()
    gc.freeze()
    print(f"anning smpp-gate listening on {gate.listening}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gate.close()


def run(args: argparse.Namespace) -> int:
    from anning.gate.config import ConfigError, hash_password, load_config

    if args.action == "hash-password":
        password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else \
            getpass.getpass("bind password: ")
        if not 0 < len(password.encode()) <= 8:
            print("anning: an SMPP password is 1-8 characters (SMPP 3.4 §4.1.1)",
                  file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if not args.config:
        print("anning: smpp-gate needs --config FILE", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    try:
        config = _effective(load_config(args.config), args)
    except ConfigError as exc:
        print(f"anning: {exc}", file=sys.stderr)
        return 2
    # grpc.aio polls in a thread of its own: behind it the event loop would wait the default
    # 5 ms for the GIL after each syscall (the server sets the same, see anning.server.app)
    sys.setswitchinterval(0.0005)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0
