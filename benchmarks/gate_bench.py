"""The SMPP gate's benchmark: what the checks add to a submit_sm, against the same gate with
checks turned off (`--pass-through`), both measured in the same run.

Processes: `anning serve` (one worker), the gate with checks, the gate without, and this one,
which is the load generator (raw SMPP over asyncio, a window of submits in flight per session,
not smpplib's one at a time) and the SMSC simulator.

    python3 benchmarks/gate_bench.py           # full size
    python3 benchmarks/gate_bench.py --quick   # CI size: fails only when something is broken

Prints, for each peer: submit->response latency at 1,000 msg/s (p50, p99), throughput with 4
sessions x window 10 and the ratio, and the time from the SMSC sending a user's "TD" to the
gate refusing the next submit for that pair.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anning.gate import pdu as P
from anning.gate.config import hash_password
from anning.testing.server import Server, free_port, write_snapshot
from anning.testing.smsc import SmscSimulator

PORT = "1069012345"
SIGNATURE = "【京东】"
PASSWORD = "bench1"


class Esme(asyncio.Protocol):
    """A raw SMPP transceiver: submits with their send times, answers deliver_sm."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sequence = 0
        self.sent: dict[int, tuple[float, asyncio.Future[int] | None]] = {}
        self.rtts: list[float] = []
        self.statuses: dict[int, int] = {}
        self.bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.freed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(P.encode_bind(P.BIND_TRANSCEIVER, self.next(), "bench", PASSWORD))

    def next(self) -> int:
        self.sequence += 1
        return self.sequence

    def submit(self, pdu: bytes, future: asyncio.Future[int] | None = None) -> None:
        seq = self.next()
        self.sent[seq] = (time.perf_counter(), future)
        assert self.transport is not None
        self.transport.write(P.with_sequence(pdu, seq))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 16:
            header = P.decode_header(self.buffer, 1 << 16)
            if len(self.buffer) < header.length:
                return
            del self.buffer[:header.length]
            command = header.command_id
            if command == P.BIND_TRANSCEIVER | P.RESPONSE:
                self.bound.set_result(header.status)
            elif command == P.SUBMIT_SM_RESP:
                at, future = self.sent.pop(header.sequence)
                self.rtts.append(time.perf_counter() - at)
                self.statuses[header.status] = self.statuses.get(header.status, 0) + 1
                if future is not None:
                    future.set_result(header.status)
                self.freed.set()
            elif command == P.DELIVER_SM:
                assert self.transport is not None
                self.transport.write(P.encode_message_resp(P.DELIVER_SM, header.sequence))
            elif command == P.ENQUIRE_LINK:
                assert self.transport is not None
                self.transport.write(P.encode_pdu(P.ENQUIRE_LINK_RESP, header.sequence))


def submit_pdu(number: str, text: str = SIGNATURE + "您的订单已发货") -> bytes:
    return P.encode_message(0, P.Message(P.SUBMIT_SM, PORT, number, 0, 8,
                                         text.encode("utf-16-be")))


async def connect(port: int) -> Esme:
    loop = asyncio.get_running_loop()
    _, esme = await loop.create_connection(Esme, "127.0.0.1", port)
    status = await asyncio.wait_for(esme.bound, 10)
    if status:
        raise SystemExit(f"bench: bind refused: {P.status_name(status)}")
    return esme


def clean_numbers(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [submit_pdu(f"1370{rng.randrange(10**7):07d}") for _ in range(n)]


async def paced(port: int, rate: int, seconds: float, sessions: int = 4) -> np.ndarray:
    """Submits at `rate`/s for `seconds`, round robin over `sessions`; their round-trip times
    (s). A submit throttled past the window (a stall of the peer) is a slow figure, not a
    broken benchmark: it is counted and printed."""
    esmes = [await connect(port) for _ in range(sessions)]
    pdus = clean_numbers(1000)
    started = time.perf_counter()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate))
        while sent < due:
            esmes[sent % sessions].submit(pdus[sent % len(pdus)])
            sent += 1
        await asyncio.sleep(0.0005)
    deadline = time.monotonic() + 10
    while any(e.sent for e in esmes) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    throttled = 0
    for esme in esmes:
        check(esme, {0, P.ESME_RTHROTTLED})
        throttled += esme.statuses.get(P.ESME_RTHROTTLED, 0)
        assert esme.transport is not None
        esme.transport.close()
    if throttled:
        print(f"  ({throttled} submits throttled past the window on port {port})")
    return np.concatenate([np.array(e.rtts) for e in esmes])


async def flood(port: int, sessions: int, window: int, seconds: float) -> float:
    """Submits/s answered with `sessions` sessions keeping `window` in flight each."""
    esmes = [await connect(port) for _ in range(sessions)]
    pdus = clean_numbers(1000, seed=2)
    stop = False
    answered = 0

    async def run(esme: Esme) -> None:
        nonlocal answered
        i = 0
        while not stop:
            while len(esme.sent) < window:
                esme.submit(pdus[i % len(pdus)])
                i += 1
            esme.freed.clear()
            await esme.freed.wait()

    tasks = [asyncio.ensure_future(run(e)) for e in esmes]
    await asyncio.sleep(0.5)  # warm up
    before = sum(len(e.rtts) for e in esmes)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    answered = sum(len(e.rtts) for e in esmes) - before
    elapsed = time.perf_counter() - started
    stop = True
    for e in esmes:
        e.freed.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.2)
    for e in esmes:
        check(e, {0, P.ESME_RTHROTTLED})
        assert e.transport is not None
        e.transport.close()
    return answered / elapsed


def check(esme: Esme, allowed: set[int]) -> None:
    bad = {P.status_name(s): n for s, n in esme.statuses.items() if s not in allowed}
    if bad or not esme.rtts:
        raise SystemExit(f"bench: broken: answers {esme.statuses}, unexpected {bad}")


async def td_to_refusal(port: int, sim: SmscSimulator, rounds: int,
                        offset: int = 0) -> np.ndarray:
    """From the SMSC sending "TD" to the gate refusing the next submit for that pair (s)."""
    esme = await connect(port)
    loop = asyncio.get_running_loop()
    times = []
    for i in range(rounds):
        user = f"1351234{offset + i:04d}"
        pdu = submit_pdu(user)
        first: asyncio.Future[int] = loop.create_future()
        esme.submit(pdu, first)
        if await first != 0:
            raise SystemExit(f"bench: broken: the first message to {user} was refused")
        sent_at = time.perf_counter()
        reply = asyncio.ensure_future(sim.send_mo("86" + user, PORT, "TD"))
        while True:
            answer: asyncio.Future[int] = loop.create_future()
            esme.submit(pdu, answer)
            status = await answer
            if status == 0x45:
                times.append(time.perf_counter() - sent_at)
                break
            if time.perf_counter() - sent_at > 5:
                raise SystemExit(f"bench: broken: {user} not refused 5 s after TD")
            await asyncio.sleep(0.001)
        await reply
    assert esme.transport is not None
    esme.transport.close()
    return np.array(times)


def start_gate(config: Path, port: int, target: str, log: Path,
               extra: list[str]) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "anning.cli", "smpp-gate", "--config", str(config),
            "--listen", f"127.0.0.1:{port}", "--target", target, *extra]
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000) if len(values) else float("nan")


async def main_async(args: argparse.Namespace, work: Path) -> int:
    entries = args.entries
    rng = np.random.default_rng(7)
    numbers = [str(n) for n in 8613800000000 + rng.choice(10**8, entries, replace=False)]
    senders = [str(s) for s in rng.choice(["京东", "淘宝", PORT, "*", "entity:京东集团"], entries)]
    write_snapshot(work / "data", numbers, senders, entities={"京东超市": "京东集团"})
    server = Server(work / "data").serve()
    # the default (checks over gRPC), the in-process engine on the server's data directory,
    # and the same gate with no checks
    peers = {"checked": [], "checked-engine": ["--data", str(work / "data")],
             "pass-through": ["--pass-through"]}
    sims = {name: await SmscSimulator(auto_receipts=False).start() for name in peers}
    ports = {name: free_port() for name in peers}
    gates = {}
    for name, port in ports.items():
        config = work / f"gate-{name}.toml"
        config.write_text(f"""
[gate]
window = {args.window}
[upstream]
address = "127.0.0.1:{sims[name].port}"
window = 200
[[accounts]]
system_id = "bench"
password = "{hash_password(PASSWORD)}"
ports = ["{PORT}"]
max_sessions = 16
""", encoding="utf-8")
        gates[name] = start_gate(config, port, server.target, work / f"gate-{name}.log",
                                 peers[name])
    try:
        for port in ports.values():
            for _ in range(200):
                try:
                    (await connect(port)).transport.close()  # type: ignore[union-attr]
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        print(f"anning serve: {entries:,} entries; gates with window {args.window}; "
              f"{'quick' if args.quick else 'full'} size", flush=True)

        rtts: dict[str, list[np.ndarray]] = {name: [] for name in ports}
        for _ in range(args.rounds):  # alternate, so drift hits both peers alike
            for name, port in ports.items():
                rtts[name].append(await paced(port, 1000, args.seconds))
        lat = {name: np.concatenate(parts) for name, parts in rtts.items()}
        print(f"\nlatency at 1,000 msg/s, submit_sm -> submit_sm_resp "
              f"({len(lat['checked']):,} submits a peer):")
        for name, values in lat.items():
            print(f"  {name:14s} p50 {ms(values, 50):6.3f} ms   p99 {ms(values, 99):6.3f} ms   "
                  f"max {ms(values, 100):6.2f} ms")
        for name in ("checked", "checked-engine"):
            added50 = ms(lat[name], 50) - ms(lat["pass-through"], 50)
            added99 = ms(lat[name], 99) - ms(lat["pass-through"], 99)
            print(f"  added by the checks ({name}): p50 {added50:+.3f} ms, p99 {added99:+.3f} ms"
                  " (target p99 <= 1 ms)")

        rates: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(args.rounds):
            for name, port in ports.items():
                rates[name].append(await flood(port, 4, 10, args.flood_seconds))
        rate = {name: float(np.median(values)) for name, values in rates.items()}
        print("\nthroughput, 4 sessions x window 10 (median of "
              f"{args.rounds} runs of {args.flood_seconds:g} s):")
        for name, value in rate.items():
            print(f"  {name:14s} {value:8,.0f} submit_sm/s   runs: "
                  + ", ".join(f"{v:,.0f}" for v in rates[name]))
        for name in ("checked", "checked-engine"):
            print(f"  ratio {name} / pass-through: {rate[name] / rate['pass-through']:.2f} "
                  f"(targets >= 5,000/s and >= 0.8)")

        print(f"\nTD from the SMSC -> next submit refused ({args.td_rounds} users a peer):")
        for i, name in enumerate(("checked", "checked-engine")):
            td = await td_to_refusal(ports[name], sims[name], args.td_rounds, offset=i * 1000)
            print(f"  {name:14s} median {ms(td, 50):.1f} ms, max {ms(td, 100):.1f} ms "
                  "(target <= 50 ms)")
    finally:
        for proc in gates.values():
            proc.terminate()
            proc.wait(15)
        for sim in sims.values():
            await sim.stop()
        server.stop()
    for name in gates:
        log = (work / f"gate-{name}.log").read_text(errors="replace")
        if "Traceback" in log:
            print(f"bench: the {name} gate logged a traceback:\n{log[-3000:]}")
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument("--window", type=int, default=10)
    args = parser.parse_args()
    if args.quick:
        args.entries, args.seconds, args.rounds = 10_000, 1.5, 1
        args.flood_seconds, args.td_rounds = 1.5, 5
    else:
        args.entries, args.seconds, args.rounds = 1_000_000, 5.0, 2
        args.flood_seconds, args.td_rounds = 4.0, 20
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as work:
        return asyncio.run(main_async(args, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
