"""SIGTERM's lame duck: the goodbye waits until no unary call is in flight, for a quiet moment,
and never longer than its limit (the end-to-end drain is in test_service.py)."""

from __future__ import annotations

import asyncio
import time

from anning.server.servicers import CallsInFlight


def test_quiet_waits_for_the_call_in_flight_then_the_settle_time():
    async def scenario() -> tuple[bool, float, bool]:
        calls = CallsInFlight()
        calls.__enter__()
        quiet = asyncio.create_task(calls.quiet(settle=0.1, limit=10))
        await asyncio.sleep(0.2)
        waiting = not quiet.done()
        calls.__exit__(None, None, None)
        ended = time.monotonic()
        came_quiet = await quiet
        return waiting, time.monotonic() - ended, came_quiet

    waiting, after_end, came_quiet = asyncio.run(scenario())
    assert waiting, "the lame duck ended with a call in flight"
    assert came_quiet
    assert 0.1 <= after_end < 5, after_end


def test_quiet_gives_up_at_its_limit_under_steady_calls():
    async def scenario() -> tuple[bool, float]:
        calls = CallsInFlight()
        stop = asyncio.Event()

        async def caller() -> None:  # never a quiet 0.1 s: a call ends every 10 ms
            while not stop.is_set():
                with calls:
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(caller())
        started = time.monotonic()
        came_quiet = await calls.quiet(settle=0.1, limit=0.3)
        waited = time.monotonic() - started
        stop.set()
        await task
        return came_quiet, waited

    came_quiet, waited = asyncio.run(scenario())
    assert not came_quiet
    assert 0.3 <= waited < 5, waited


def test_quiet_at_once_when_idle_long_enough():
    async def scenario() -> tuple[bool, float]:
        calls = CallsInFlight()
        with calls:
            pass
        await asyncio.sleep(0.1)
        started = time.monotonic()
        return await calls.quiet(settle=0.05, limit=10), time.monotonic() - started

    came_quiet, waited = asyncio.run(scenario())
    assert came_quiet and waited < 0.05, waited
