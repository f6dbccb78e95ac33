"""The agents' shared bandwidth: the rate holds, a higher class in progress
has first claim, and what it leaves unused goes to the others (trio's
MockClock, so time is exact)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.services.agents import BandwidthShare

RATE = 1_000_000  # bytes/s
PIECE = 100_000  # the bucket holds one piece (a tenth of a second)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def read(share: BandwidthShare, klass: int, pieces: int, done: dict[int, float], pause_s: float = 0.0) -> None:
    """One response: ``pieces`` pieces, with ``pause_s`` between them (a slow client)."""
    with share.reading(klass):
        for _ in range(pieces):
            await share.take(klass, PIECE)
            await trio.sleep(pause_s)
    done[klass] = trio.current_time()


async def test_higher_classes_finish_first_and_the_rate_holds(autojump_clock: trio.testing.MockClock) -> None:
    share = BandwidthShare(RATE)
    done: dict[int, float] = {}
    start = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, share, 2, 10, done)  # bulk starts first
            await trio.sleep(0.05)
            nursery.start_soon(read, share, 0, 10, done)
            await trio.sleep(0.001)  # trio may run tasks started together in any order
            nursery.start_soon(read, share, 1, 10, done)
    # 30 pieces at 1 MB/s less the first (the bucket starts full); bulk's
    # first two pieces went before the others arrived.
    assert done[0] - start == pytest.approx(1.1, abs=0.02)
    assert done[1] - start == pytest.approx(2.1, abs=0.02)
    assert done[2] - start == pytest.approx(2.9, abs=0.02)


async def test_what_a_slow_higher_class_leaves_goes_to_the_lower(autojump_clock: trio.testing.MockClock) -> None:
    share = BandwidthShare(RATE)
    done: dict[int, float] = {}
    start = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, share, 0, 5, done, 0.5)  # uses a fifth of the rate
            nursery.start_soon(read, share, 2, 10, done)
    assert done[2] < done[0] and done[0] - start == pytest.approx(2.5, abs=0.3)


async def test_no_cap_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    share = BandwidthShare(0)
    start = trio.current_time()
    with share.reading(2):
        await share.take(2, 1 << 30)
    assert trio.current_time() == start
