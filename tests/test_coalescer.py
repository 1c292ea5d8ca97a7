"""storage/batch.py: calls that arrive while a batch is in flight share the next one; each caller gets
its own result or error, and one caller leaving does not take the others' results with it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from storage.batch import Coalescer, to_power_of_two


class Doubler:
    """Doubles numbers in batches; fails a batch holding 13, and returns an error for 7 alone."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def run(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await self.gate.wait()
        if 13 in items:
            raise RuntimeError("database away")
        return [ValueError("seven") if n == 7 else 2 * n for n in items]


async def test_calls_during_a_batch_go_together_in_the_next():
    doubler = Doubler()
    coalescer = Coalescer(doubler.run, name="test", max_batch=3)
    first = asyncio.create_task(coalescer(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(coalescer(n)) for n in (2, 3, 4, 5)]
    await asyncio.sleep(0)
    doubler.gate.set()
    assert [await first, *[await task for task in rest]] == [2, 4, 6, 8, 10]
    assert doubler.batches == [[1], [2, 3, 4], [5]]  # at most max_batch at once, in arrival order


async def test_with_two_lanes_a_call_during_a_batch_goes_at_once_in_the_other():
    doubler = Doubler()
    coalescer = Coalescer(doubler.run, name="test", lanes=2)
    first = asyncio.create_task(coalescer(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer(2))
    for _ in range(3):  # the call, then its lane's first step
        await asyncio.sleep(0)
    assert doubler.batches == [[1], [2]]  # both in flight; one lane would hold 2 back until 1 is done
    rest = [asyncio.create_task(coalescer(n)) for n in (3, 4)]
    await asyncio.sleep(0)
    doubler.gate.set()
    assert [await task for task in (first, second, *rest)] == [2, 4, 6, 8]
    assert doubler.batches[2:] in ([[3, 4]], [[3], [4]])  # the next free lane takes what waits


async def test_a_call_after_every_lane_finished_starts_a_new_one():
    doubler = Doubler()
    doubler.gate.set()
    coalescer = Coalescer(doubler.run, name="test", lanes=2)
    assert await coalescer(1) == 2
    assert await asyncio.wait_for(coalescer(2), 1) == 4  # never stranded behind a lane that is over


async def test_an_error_reaches_its_batch_only():
    doubler = Doubler()
    doubler.gate.set()
    coalescer = Coalescer(doubler.run, name="test")
    results = await asyncio.gather(coalescer(12), coalescer(13), coalescer(7), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError, RuntimeError]
    results = await asyncio.gather(coalescer(6), coalescer(7), return_exceptions=True)
    assert results[0] == 12 and isinstance(results[1], ValueError)  # 7's own error, 6 unharmed
    assert await coalescer(1) == 2


async def test_a_caller_that_leaves_does_not_stop_the_batch():
    doubler = Doubler()
    coalescer = Coalescer(doubler.run, name="test")
    leaving, staying = asyncio.create_task(coalescer(1)), asyncio.create_task(coalescer(2))
    await asyncio.sleep(0)
    leaving.cancel()
    doubler.gate.set()
    assert await staying == 4
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert doubler.batches == [[1, 2]]  # its item still went (what was written stays written)


def test_batches_are_padded_to_a_few_statement_shapes():
    assert [len(to_power_of_two(list(range(n)))) for n in (1, 2, 3, 5, 8, 9, 100)] == [1, 2, 4, 8, 8, 16, 128]
    assert to_power_of_two([4, 5, 6]) == [4, 5, 6, 6]  # a repeat: the same session matched again by the guard


class OneConnection:
    """A connection only one batch holds at a time, as SQLite's pool of one; `refuse` makes it fail to open."""

    def __init__(self) -> None:
        self.lock, self.refuse = asyncio.Lock(), False

    @contextlib.asynccontextmanager
    async def connect(self):
        async with self.lock:
            if self.refuse:
                raise ConnectionError("database away")
            yield self


async def test_a_batch_is_taken_when_its_connection_is_at_hand():
    """Calls arriving while a batch waits for the connection (held by another coalescer's batch) go in it."""
    connection, doubler = OneConnection(), Doubler()
    doubler.gate.set()
    runs: list[list[int]] = []

    async def run(items, conn):
        assert conn is connection
        runs.append(items)
        return await doubler.run(items)

    coalescer = Coalescer(run, name="test", connect=connection.connect)
    async with connection.lock:  # another batch holds the connection
        first = asyncio.create_task(coalescer(1))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(coalescer(n)) for n in (2, 3)]
        await asyncio.sleep(0)
    assert [await task for task in (first, *rest)] == [2, 4, 6]
    assert runs == [[1, 2, 3]]  # taken once connected: one batch, not [1] then [2, 3]
    assert (coalescer.batches, coalescer.items) == (1, 3)


async def test_a_connection_that_cannot_be_had_fails_the_calls_waiting_for_it_only():
    connection, doubler = OneConnection(), Doubler()
    doubler.gate.set()
    coalescer = Coalescer(lambda items, conn: doubler.run(items), name="test", connect=connection.connect)
    connection.refuse = True
    results = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError] and doubler.batches == []
    connection.refuse = False
    assert await coalescer(3) == 6  # the next call is not stranded
