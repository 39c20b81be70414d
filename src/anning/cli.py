"""The `anning` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from anning import __version__
from anning.demo import ensure_snapshot
from anning.errors import CorruptFile, CorruptSnapshot, InvalidInput
from anning.index import SuppressionIndex
from anning.model.scopes import Scope
from anning.storage.layout import DataDir
from anning.storage.snapshot import read_snapshot

if TYPE_CHECKING:
    from anning.client import Client

T = TypeVar("T")
DEFAULT_DATA = "./anning-data"


def _load(data: str) -> SuppressionIndex:
    path = DataDir(data).snapshot
    if not path.exists():
        raise SystemExit(f"anning: no snapshot at {path} (run `anning demo --data {data}`)")
    return read_snapshot(path)


def _status(idx: SuppressionIndex, seconds: float) -> dict[str, Any]:
    return {
        "entries": len(idx),
        "senders": len(idx.senders),
        "scopes": len(idx.scopes),
        "categories": list(idx.categories),
        "bytes": idx.nbytes,
        "bytes_per_entry": round(idx.nbytes / max(len(idx), 1), 2),
        "load_seconds": round(seconds, 4),
        "snapshot": idx.meta.get("path"),
        "as_of": idx.meta.get("as_of"),
        "events_through": idx.events_through,
        "folded_through": idx.folded_through,
    }


def cmd_demo(args: argparse.Namespace) -> int:
    path, generated = ensure_snapshot(args.data, args.entries)
    started = time.perf_counter()
    idx = read_snapshot(path)
    status = _status(idx, time.perf_counter() - started)
    print(("generated demo list; " if generated else "") + json.dumps(status, ensure_ascii=False))
    numbers, scopes, _ = idx.entries()
    print("try, e.g.:", *(f"{idx.scopes[s] if idx.scopes[s] != '*' else 'anyone'} "
                          f"{int(n)}" for n, s in zip(numbers[:3], scopes[:3], strict=True)),
          sep="\n  ")
    print("checks from standard input, one `SENDER NUMBER [CATEGORY]` a line; Ctrl-D ends",
          flush=True)
    return _answer_lines(idx, sys.stdin)


def _answer_lines(idx: SuppressionIndex, lines: Iterable[str]) -> int:
    failures = 0
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            print(f"error: expected `SENDER NUMBER [CATEGORY]`, got {line.strip()!r}", flush=True)
            failures += 1
            continue
        try:
            scope = idx.check(*parts)
        except InvalidInput as exc:
            print(f"error: {exc}", flush=True)
            failures += 1
            continue
        print(f"{'SUPPRESSED' if scope else 'ok'} {scope.name}", flush=True)
    return 1 if failures else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 not suppressed, 1 suppressed (or failed closed), 2 bad input, 3 no answer."""
    from anning import cli_show as show

    if args.data:  # offline, against the binary snapshot
        idx = _load(args.data)
        try:
            scope = idx.check(args.sender, args.number, args.category)
        except InvalidInput as exc:
            print(f"anning: {exc}", file=sys.stderr)
            return 2
        name = show.scope_name(int(scope))
        if args.json:
            print(show.as_json({"suppressed": bool(scope), "scope": name}))
        else:
            print(show.check_line(bool(scope), name, args.sender, args.number, args.category))
        return 0 if scope is Scope.NONE else 1

    def ask(client: Client) -> tuple[Any, Any]:
        result = client.check(args.sender, args.number, args.category)
        why = None
        if not args.json and not result.failed_closed:  # the why, for a person: best effort
            import grpc

            try:
                why = client.explain(args.sender, args.number, args.category)
            except grpc.RpcError:
                why = None
        return result, why

    result, why = _remote(args, ask)
    name = show.scope_name(result.scope)
    if args.json:
        print(show.as_json({"suppressed": result.suppressed, "scope": name,
                            **({"failed_closed": True, "error": result.error}
                               if result.failed_closed else {})}))
    else:
        print(show.check_line(result.suppressed, name, args.sender, args.number, args.category,
                              why, result.failed_closed, result.error))
    return 1 if result.suppressed else 0


def _client(args: argparse.Namespace) -> Client:
    from anning.client import Client

    token = args.token or os.environ.get("ANNING_TOKEN")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise _BadInput("tls-cert, tls-key: a client certificate needs both (mutual TLS)")
    root, cert, key = (_read_file(flag, path) for flag, path in (
        ("tls-ca", args.tls_ca), ("tls-cert", args.tls_cert), ("tls-key", args.tls_key)))
    return Client(args.target, token, timeout=args.timeout, root_certificates=root,
                  certificate_chain=cert, private_key=key,
                  tls=bool(root or cert), fail_closed=getattr(args, "fail_closed", False))


class _BadInput(Exception):
    """A flag the command cannot use: exit 2."""


def _read_file(flag: str, path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _BadInput(f"{flag}: {path!r}: {exc.strerror}") from None


# Codes that say the request itself is wrong (bad input, a missing or wrong token, a role it
# lacks): asking again will not help. Exit 2; any other failure, 3 (no answer: try later).
_BAD_REQUEST = ("INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED")


def _remote(args: argparse.Namespace, call: Callable[[Client], T]) -> T:
    import grpc

    try:
        client = _client(args)
    except _BadInput as exc:
        print(f"anning: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    with client:
        try:
            return call(client)
        except grpc.RpcError as exc:
            print(f"anning: {exc.code().name}: {exc.details()}", file=sys.stderr)
            raise SystemExit(2 if exc.code().name in _BAD_REQUEST else 3) from None


def _print_message(args: argparse.Namespace, message: Any, human: str) -> None:
    from anning import cli_show as show

    print(show.as_json(show.plain(message)) if args.json else human)


def cmd_write(args: argparse.Namespace) -> int:
    from anning import cli_show as show

    method = "opt_out" if args.command == "opt-out" else "opt_in"
    ack = _remote(args, lambda c: getattr(c, method)(args.number, args.scope, args.category,
                                                     args.at_ms, args.source))
    action = "opted out" if method == "opt_out" else "opted in"
    _print_message(args, ack, show.write_line(action, args.number, args.scope, args.category,
                                              ack))
    return 0


def cmd_reassign(args: argparse.Namespace) -> int:
    from anning import cli_show as show

    ack = _remote(args, lambda c: c.reassign(args.number, args.at_ms, args.source))
    _print_message(args, ack, show.write_line("reassigned", args.number, "", "", ack))
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from anning.engine.offline import checkpoint_data_dir

    report = checkpoint_data_dir(args.data)  # the fold reads the log itself
    if report is None:
        print("anning: nothing to fold, or a checkpoint is already running", file=sys.stderr)
        return 0
    print(json.dumps(dataclasses.asdict(report)))
    return 0


def cmd_reply(args: argparse.Namespace) -> int:
    from anning import cli_show as show

    result = _remote(args, lambda c: c.report_reply(args.sender, args.number, args.text))
    _print_message(args, result, show.reply_line(args.number, args.text, result))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from anning import cli_show as show

    why = _remote(args, lambda c: c.explain(args.sender, args.number, args.category))
    scope = show.scope_name(int(why.scope))
    line = show.check_line(why.suppressed, scope, args.sender, args.number, args.category, why)
    if why.suppressed and len(why.categories) > 1:
        line += f" [categories: {', '.join(why.categories)}]"
    _print_message(args, why, line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from anning import cli_show as show

    status = _remote(args, lambda c: c.status())
    _print_message(args, status, show.status_lines(status))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from anning.server.app import ServeOptions, serve

    return serve(ServeOptions(
        data=args.data, listen=args.listen, workers=args.workers, threads=args.threads,
        tokens=args.tokens, tls_cert=args.tls_cert, tls_key=args.tls_key,
        client_ca=args.client_ca, metrics=args.metrics, reflection=args.reflection,
        demo=not args.no_demo, demo_entries=args.demo_entries, max_batch=args.max_batch,
        max_concurrent_rpcs=args.max_concurrent_rpcs, checkpoint_bytes=args.checkpoint_bytes,
        **_replica_options(args),
        load_dirs=args.load_dir,
    ))


def _replica_options(args: argparse.Namespace) -> dict[str, Any]:
    """`--nats` and its companions, as ServeOptions fields (none without --nats)."""
    if not args.nats:
        return {}
    from anning.storage.nats import StreamSettings, TlsFiles

    lag_events, _, lag_seconds = args.max_lag.partition(",")
    try:
        settings = StreamSettings(
            args.nats, stream=args.stream, replicas=args.replicas,
            retention_seconds=args.nats_retention_days * 86400.0,
            max_lag_events=int(lag_events), max_lag_seconds=float(lag_seconds or 5),
            write_timeout_seconds=args.nats_timeout)
    except ValueError:
        raise InvalidInput(f"--max-lag: {args.max_lag!r} is not EVENTS,SECONDS") from None
    settings.check()
    tls = TlsFiles(args.nats_ca, args.nats_cert, args.nats_key) \
        if args.nats_ca or args.nats_cert else None
    return {"replica": settings, "nats_tls": tls}


def cmd_nats_config(args: argparse.Namespace) -> int:
    """The configuration of a NATS cluster for anning's events, and how to start it."""
    from anning.storage.nats import find_nats_server, write_cluster_config

    layout = write_cluster_config(args.dir, args.nodes, args.host, args.client_port,
                                  args.cluster_port, args.monitor_port,
                                  max_batch=args.max_batch)
    server = find_nats_server() or "nats-server"
    print(f"# {len(layout.nodes)} nodes configured in {args.dir}; start each (its own terminal "
          "or unit):")
    for node in layout.nodes:
        print(f"{server} -c {node.path}")
    print("# then every replica:")
    print(f"anning serve --nats {layout.urls} --stream ANNING --replicas "
          f"{min(3, len(layout.nodes))} --data ./replica-data --listen 127.0.0.1:50051")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from anning.server.tokens import new_token

    try:
        token, line = new_token(args.roles.split(","))
    except ValueError as exc:
        print(f"anning: {exc}", file=sys.stderr)
        return 2
    print(f"token (give it to the client, once): {token}")
    print(f"tokens-file line (the server keeps only this): {line}")
    return 0


def cmd_events_export(args: argparse.Namespace) -> int:
    """The change feed as CSV (`number,sender,category,action,at,source,seq`), readable by
    `anning load` itself; safe beside running servers."""
    from anning.engine.export import export_csv

    data = DataDir(args.data)
    if not data.path.is_dir():
        print(f"anning: data: {args.data!r} is not a data directory", file=sys.stderr)
        return 2
    if args.until is not None and args.until < args.since:
        print(f"anning: until: {args.until} is before since {args.since}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "wb") as out:
            count, last = export_csv(data, args.since, args.until, out)
    else:
        count, last = export_csv(data, args.since, args.until, sys.stdout.buffer)
    print(f"anning: {count:,} events, sequences {args.since + 1 if count else '-'} to "
          f"{last if count else '-'}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    idx = _load(args.data)
    seconds = time.perf_counter() - started
    if args.verify:
        idx.verify()
    print(json.dumps(_status(idx, seconds), ensure_ascii=False, indent=2))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from anning.engine.offline import load_into_data_dir
    from anning.load import LoadOptions, SnapshotRefused, progress_printer

    data = Path(args.data)
    options = LoadOptions(
        entities=args.entities,
        as_of=args.as_of,
        rejects=args.rejects or data / "rejects.csv",
        max_reject_ratio=args.max_reject_ratio,
        max_shrink=args.max_shrink,
        allow_shrink=args.allow_shrink,
        categories=tuple(args.categories.split(",")),
        default_country=args.default_country,
        events_through=args.events_through,
    )
    progress = None if args.json or args.quiet else progress_printer()
    try:
        report = load_into_data_dir(data, args.snapshot, options, progress)
        status = 0
    except SnapshotRefused as refused:
        report = refused.report
        status = 4
    except InvalidInput as exc:
        print(f"anning: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.summary(), file=sys.stderr if status else sys.stdout)
    if status:
        print(f"anning: load refused, the current snapshot is untouched: {report.refused}",
              file=sys.stderr)
    return status


def cmd_smpp_gate(args: argparse.Namespace) -> int:
    from anning.gate.main import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anning", description=__doc__)
    parser.add_argument("--version", action="version", version=f"anning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="serve a local demo list: checks from standard input")
    demo.add_argument("--data", default=DEFAULT_DATA, help="data directory (default %(default)s)")
    demo.add_argument("--entries", type=int, default=100_000,
                      help="size of the generated list when there is none")
    demo.set_defaults(func=cmd_demo)

    def remote(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--target", default="127.0.0.1:50051", help="the server (HOST:PORT)")
        p.add_argument("--token", help="bearer token (default $ANNING_TOKEN)")
        p.add_argument("--tls-ca", help="CA certificate to verify the server (enables TLS)")
        p.add_argument("--tls-cert", help="client certificate, for a server that requires one "
                       "(mutual TLS: `anning serve --client-ca`); with --tls-key")
        p.add_argument("--tls-key", help="the client certificate's private key")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        p.add_argument("--json", action="store_true",
                       help="print JSON for scripts (default: a line for people)")
        return p

    serve = sub.add_parser("serve", help="the gRPC server")
    serve.add_argument("--data", default=DEFAULT_DATA, help="data directory (default %(default)s)")
    serve.add_argument("--listen", default="127.0.0.1:50051")
    serve.add_argument("--workers", type=int, default=0, help="processes (default: one a core)")
    serve.add_argument("--threads", type=int, default=16,
                       help="threads a worker for snapshot loads (calls run on its event loop)")
    serve.add_argument("--tokens", help="tokens file: `sha256:<hex> role,role` a line")
    serve.add_argument("--tls-cert")
    serve.add_argument("--tls-key")
    serve.add_argument("--client-ca", help="require client certificates signed by this CA")
    serve.add_argument("--metrics", help="serve Prometheus metrics on HOST:PORT")
    serve.add_argument("--reflection", action="store_true", help="enable server reflection")
    serve.add_argument("--no-demo", action="store_true",
                       help="with no snapshot, wait for Admin.LoadSnapshot instead of a demo list")
    serve.add_argument("--demo-entries", type=int, default=100_000)
    serve.add_argument("--max-batch", type=int, default=10_000)
    serve.add_argument("--checkpoint-bytes", type=int, default=8 << 20,
                       help="fold the write log into a checkpoint once it holds this many bytes")
    serve.add_argument("--max-concurrent-rpcs", type=int, default=None,
                       help="a worker answers RESOURCE_EXHAUSTED past this many calls at once")
    nats = serve.add_argument_group("replicas (SPEC §8; pip install 'anning[cluster]')")
    nats.add_argument("--nats", help="share events on a NATS JetStream stream: "
                      "nats://host:port,... (default: the data directory's own write log)")
    nats.add_argument("--stream", default="ANNING", help="the stream (default %(default)s)")
    nats.add_argument("--replicas", type=int, default=3,
                      help="the stream's replication factor when it is made (default 3)")
    nats.add_argument("--nats-retention-days", type=float, default=7.0,
                      help="how long the stream keeps events (a replica away longer needs a "
                      "snapshot load; default %(default)s)")
    nats.add_argument("--max-lag", default="10000,5", metavar="EVENTS,SECONDS",
                      help="behind the stream by more, a replica says NOT_SERVING for checks "
                      "(default %(default)s)")
    nats.add_argument("--nats-timeout", type=float, default=5.0, metavar="SECONDS",
                      help="a write the stream has not acknowledged by then answers "
                      "UNAVAILABLE (default %(default)s)")
    nats.add_argument("--nats-ca", help="CA certificate of the NATS servers (TLS)")
    nats.add_argument("--nats-cert", help="client certificate for NATS (mutual TLS)")
    nats.add_argument("--nats-key", help="its key")
    serve.add_argument("--load-dir", action="append", default=[], metavar="DIR",
                       help="Admin.LoadSnapshot may read (and write rejects) under DIR as well "
                            "as the data directory; repeatable")
    serve.set_defaults(func=cmd_serve)

    nats_config = sub.add_parser("nats-config", help="write the configuration of a NATS "
                                 "cluster that keeps anning's events")
    nats_config.add_argument("--dir", required=True, help="where the files go")
    nats_config.add_argument("--nodes", type=int, default=3)
    nats_config.add_argument("--host", default="127.0.0.1")
    nats_config.add_argument("--client-port", type=int, default=4222)
    nats_config.add_argument("--cluster-port", type=int, default=6222)
    nats_config.add_argument("--monitor-port", type=int, default=8222)
    nats_config.add_argument("--max-batch", type=int, default=10_000,
                             help="the largest write, in events (anning serve --max-batch)")
    nats_config.set_defaults(func=cmd_nats_config)

    check = remote(sub.add_parser(
        "check", help="one check; exit 0 not suppressed, 1 suppressed, 2 bad input, 3 no answer"))
    check.add_argument("sender")
    check.add_argument("number")
    check.add_argument("--category", default="")
    check.add_argument("--data", help="check the snapshot in DATA offline instead")
    check.add_argument("--fail-closed", action="store_true",
                       help="report suppressed (exit 1) when no answer can be had, not 3")
    check.set_defaults(func=cmd_check)

    for name, what in (("opt-out", "record an opt-out"), ("opt-in", "record an opt-in")):
        write = remote(sub.add_parser(name, help=what))
        write.add_argument("number")
        write.add_argument("scope", help="a sender, entity:NAME, or '*' for global")
        write.add_argument("--category", default="", help="marketing (default), ..., or all")
        write.add_argument("--at-ms", type=int, default=0, help="when the user acted (Unix ms)")
        write.add_argument("--source", default="", help="api (default), customer_service, ...")
        write.set_defaults(func=cmd_write)

    reassign = remote(sub.add_parser("reassign", help="a number went to a new subscriber"))
    reassign.add_argument("number")
    reassign.add_argument("--at-ms", type=int, default=0, help="when (Unix ms; default now)")
    reassign.add_argument("--source", default="", help="api (default), regulator, ...")
    reassign.set_defaults(func=cmd_reassign)

    checkpoint = sub.add_parser(
        "checkpoint", help="fold the write log of --data into its checkpoint (safe while serving)")
    checkpoint.add_argument("--data", default=DEFAULT_DATA)
    checkpoint.set_defaults(func=cmd_checkpoint)

    reply = remote(sub.add_parser("reply", help="report a user's reply (TD, 退订, STOP ...)"))
    reply.add_argument("sender")
    reply.add_argument("number")
    reply.add_argument("text")
    reply.set_defaults(func=cmd_reply)

    explain = remote(sub.add_parser("explain", help="why a number is suppressed"))
    explain.add_argument("sender")
    explain.add_argument("number")
    explain.add_argument("--category", default="")
    explain.set_defaults(func=cmd_explain)

    status = remote(sub.add_parser("status", help="the server's status"))
    status.set_defaults(func=cmd_status)

    token = sub.add_parser("token", help="make a bearer token and its tokens-file line")
    token.add_argument("new", choices=["new"])
    token.add_argument("--roles", required=True, help="check,write,admin (comma-separated)")
    token.set_defaults(func=cmd_token)

    events = sub.add_parser("events", help="the events anning took (the change feed)")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    export = events_sub.add_parser(
        "export", help="events past a sequence as CSV, for upstream (readable by `anning load`)")
    export.add_argument("--data", default=DEFAULT_DATA)
    export.add_argument("--since", type=int, default=0, metavar="SEQ",
                        help="the events after this sequence (default 0: all there are)")
    export.add_argument("--until", type=int, default=None, metavar="SEQ",
                        help="up to this sequence (default: the last there is)")
    export.add_argument("--out", help="a file to write (default: standard output)")
    export.set_defaults(func=cmd_events_export)

    info = sub.add_parser("info", help="what the snapshot in --data holds")
    info.add_argument("--data", default=DEFAULT_DATA)
    info.add_argument("--verify", action="store_true", help="also check every invariant")
    info.set_defaults(func=cmd_info)

    load = sub.add_parser(
        "load", help="load a snapshot (CSV/TSV, .gz/.zst) into the binary snapshot of --data")
    load.add_argument("snapshot", nargs="+", help="snapshot files")
    load.add_argument("--entities", help="a `sender,entity` file")
    load.add_argument("--as-of", help="when the snapshot was cut (default: the file's time)")
    load.add_argument("--data", default=DEFAULT_DATA)
    load.add_argument("--rejects", help="where bad rows go (default DATA/rejects.csv)")
    load.add_argument("--max-reject-ratio", type=float, default=0.001,
                      help="refuse the load past this share of bad rows (default 0.001)")
    load.add_argument("--max-shrink", type=float, default=0.20,
                      help="refuse a list this much smaller than the current (default 0.20)")
    load.add_argument("--allow-shrink", action="store_true", help="load even if it shrinks")
    load.add_argument("--categories", default="marketing,notification",
                      help="category names, comma-separated (default %(default)s)")
    load.add_argument("--default-country", type=int, default=86)
    load.add_argument("--events-through", type=int, default=None, metavar="SEQ",
                      help="the snapshot already reflects every anning event up to this "
                      "sequence (from `anning events export`); default: it declares none")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    load.add_argument("--quiet", action="store_true", help="no progress output")
    load.set_defaults(func=cmd_load)

    smpp_gate = sub.add_parser(
        "smpp-gate", help="the SMPP gate: checks every submit_sm between ESMEs and the SMSC")
    from anning.gate.main import add_arguments

    add_arguments(smpp_gate)
    smpp_gate.set_defaults(func=cmd_smpp_gate)

    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except CorruptFile as exc:
        what = "the snapshot" if isinstance(exc, CorruptSnapshot) else "a damaged file"
        print(f"anning: refusing {what}: {exc}", file=sys.stderr)
        return 3
    except InvalidInput as exc:
        print(f"anning: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
