"""Real nodes in one trio process, on 127.0.0.1 with OS-chosen ports."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from config import load_settings
from node.home import init_home
from node.node import Node

POLL_S = 0.02


async def start_node(
    nursery: trio.Nursery,
    home: Path,
    bootstrap: tuple[str, ...] = (),
    clock: Callable[[], float] = time.time,
    /,
    **overrides: object,
) -> Node:
    init_home(home)
    settings = load_settings(
        home,
        {
            "api.port": 0,
            "p2p.listen": ("/ip4/127.0.0.1/tcp/0",),
            "p2p.bootstrap": bootstrap,
            "p2p.connect_timeout_s": 5.0,
            "p2p.stream_timeout_s": 5.0,
            "storage.chunk_size_kb": 64,
            **overrides,
        },
        environ={},
    )
    node = Node(settings, clock=clock)
    await nursery.start(node.run)
    return node


async def start_overlay(
    nursery: trio.Nursery, root: Path, n: int, clock: Callable[[], float] = time.time, /, **overrides: object
) -> list[Node]:
    """n nodes, all bootstrapped through the first, connected when this returns."""
    first = await start_node(nursery, root / "n0", (), clock, **overrides)
    assert first.overlay is not None
    boot = (first.overlay.p2p.addrs[0],)
    nodes = [first] + [await start_node(nursery, root / f"n{i}", boot, clock, **overrides) for i in range(1, n)]
    await wait_for(lambda: len(first.overlay.p2p.connected_peers()) >= n - 1)  # type: ignore[union-attr]
    return nodes


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll a condition libp2p gives no event for, under a deadline."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(POLL_S)


async def wait_for_receipt(nodes: list[Node] | tuple[Node, ...], receipt_id: str, policy_name: str) -> None:
    """Until every node holds the receipt and its policy: the two replicate
    independently, and a receipt whose policy has not arrived reads as 404."""

    def held(node: Node) -> bool:
        book = node.quotas.book if node.quotas is not None else None
        return book is not None and receipt_id in book.receipts and policy_name in book.policies

    await wait_for(lambda: all(held(n) for n in nodes))


async def start_killable_node(
    nursery: trio.Nursery, home: Path, bootstrap: tuple[str, ...] = (), /, **overrides: object
) -> tuple[Node, Callable[[], Awaitable[None]]]:
    """A node the test can make vanish mid-transfer: ``await kill()`` cancels it
    and returns once it has fully stopped (its home lock released)."""
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[tuple[Node, trio.CancelScope]] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    node = await start_node(inner, home, bootstrap, time.time, **overrides)
                    task_status.started((node, scope))
        finally:
            stopped.set()

    node, scope = await nursery.start(run)

    async def kill() -> None:
        scope.cancel()
        with trio.fail_after(30):
            await stopped.wait()

    return node, kill
