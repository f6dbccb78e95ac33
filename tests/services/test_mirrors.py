"""What the mirror client accepts from an HTTP(S) mirror, and what it refuses.

The mirror's side is httpx's own ``MockTransport`` (a handler answering each
request as a server would), so every answer here is one a real server could
send; the downloads over real nginx are in tests/integration/test_mirrors.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from node.errors import MirrorFailed, MirrorRefused
from node.services.mirrors import Mirror, MirrorHttp, mirror, origin_of
from protocols.framing import Budget, OverBudget

FILE = bytes(range(256)) * 40  # 10240 bytes
URL = "http://mirror.example/file"
M = mirror(URL, trusted=True)
RANGE = "bytes 1000-2999/10240"
Handler = Callable[[httpx.Request], httpx.Response]


def answer(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    """A response whose body streams, as one from the network does."""
    return httpx.Response(
        status, headers={k.replace("_", "-"): v for k, v in headers.items()}, stream=httpx.ByteStream(body)
    )


def ranged(request: httpx.Request, data: bytes = FILE) -> httpx.Response:
    """What a good server answers to ``Range: bytes=a-b``."""
    first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
    a, b = int(first), min(int(last), len(data) - 1)
    return answer(206, data[a : b + 1], content_range=f"bytes {a}-{b}/{len(data)}")


def client(handler: Handler, budget: Budget | None = None, timeout_s: float = 5.0) -> MirrorHttp:
    return MirrorHttp(
        timeout_s=timeout_s,
        connect_timeout_s=1.0,
        budget=budget or Budget(1 << 20),
        allow_private=False,
        transport=httpx.MockTransport(handler),
    )


async def test_a_range_is_read_exactly() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ranged(request)

    budget = Budget(1 << 20)
    got = await client(handler, budget).get(M, 1000, 3000, len(FILE))
    assert got.data == FILE[1000:3000] and got.size == len(FILE)
    assert seen[0].headers["range"] == "bytes=1000-2999" and seen[0].headers["accept-encoding"] == "identity"
    assert budget.used == 0


async def test_the_size_comes_from_the_content_range() -> None:
    http = client(ranged)
    assert await http.size(M) == (len(FILE), None)


async def test_a_whole_file_answer_is_taken_when_it_is_what_was_asked() -> None:
    small = b"tiny"
    got = await client(lambda r: answer(200, small)).get(M, 0, 4096, None)
    assert got.data == small and got.size == 4


@pytest.mark.parametrize(
    ("handler", "why"),
    [
        (lambda r: answer(200, FILE), "does not serve byte ranges"),
        (lambda r: answer(404), "answered 404"),
        (lambda r: answer(302, location="http://elsewhere/"), "answered 302"),
        (lambda r: answer(206, FILE[:2000]), "without a byte Content-Range"),
        (lambda r: answer(206, FILE[:2000], content_range="bytes 0-1999/10240"), "sent bytes 0-1999/10240 for"),
        (lambda r: ranged(r, FILE + b"x"), "serves a file of 10241 bytes"),
        (lambda r: answer(206, FILE[1000:3000] + b"more", content_range=RANGE), "more than the 2000 bytes"),
        (lambda r: answer(206, FILE[1000:2000], content_range=RANGE), "sent 1000 of 2000 bytes"),
        (lambda r: answer(206, FILE[1000:3000], content_range=RANGE, content_encoding="gzip"), "encoding 'gzip'"),
    ],
)
async def test_a_wrong_answer_is_refused(handler: Handler, why: str) -> None:
    budget = Budget(1 << 20)
    with pytest.raises(MirrorFailed, match=why):
        await client(handler, budget).get(M, 1000, 3000, len(FILE))
    assert budget.used == 0


async def test_a_mirror_that_drips_is_cut_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async def drip() -> AsyncIterator[bytes]:
        for i in range(2000):
            await trio.sleep(1)
            yield FILE[1000 + i : 1001 + i]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"content-range": RANGE}, content=drip())

    with pytest.raises(MirrorFailed, match="no piece for 30"):
        await client(handler, timeout_s=30).get(M, 1000, 3000, len(FILE))


async def test_bodies_in_flight_are_bounded_by_the_node_budget() -> None:
    budget = Budget(1500)
    with pytest.raises(OverBudget, match="no room for 2000 bytes"):
        await client(ranged, budget).get(M, 1000, 3000, len(FILE))


@pytest.mark.parametrize(
    "url",
    ["ftp://host/file", "http:///nohost", "http://user:secret@host/file", "http://host/file#frag", "not a url"],
)
def test_a_mirror_url_must_be_plain_http(url: str) -> None:
    with pytest.raises(ValueError):
        mirror(url, trusted=False)


def test_mirrors_are_keyed_by_origin() -> None:
    assert origin_of("https://cdn.example/a/b?c") == "https://cdn.example:443"
    assert origin_of("http://cdn.example:8080/x") == "http://cdn.example:8080"


@pytest.mark.parametrize(
    "host",
    [
        *("127.0.0.1", "localhost", "10.1.2.3", "192.168.0.9", "[::1]", "169.254.169.254"),
        # IPv6 addresses that carry an IPv4 one inside: mapped, compatible, 6to4, NAT64.
        *("[::ffff:10.0.0.1]", "[::127.0.0.1]", "[2002:7f00::1]", "[64:ff9b::a9fe:a9fe]"),
    ],
)
async def test_a_mirror_nobody_trusted_may_not_point_inside(host: str) -> None:
    http = client(ranged)
    untrusted = mirror(f"http://{host}:8080/file", trusted=False)
    with pytest.raises(MirrorRefused, match="not a public address"):
        await http.check(untrusted)
    await http.check(Mirror(untrusted.url, trusted=True))  # the operator's own: any address


async def test_a_run_hands_over_each_piece_as_soon_as_it_is_whole() -> None:
    """Consecutive chunks in one request: the first is used while the rest arrive."""
    got: list[tuple[int, bytes]] = []

    async def keep(index: int, data: bytes) -> None:
        got.append((index, data))

    head = await client(ranged).get_run(M, 1000, [700, 700, 600], len(FILE), keep)
    assert got == [(0, FILE[1000:1700]), (1, FILE[1700:2400]), (2, FILE[2400:3000])] and head.size == len(FILE)
