"""HTTP(S) mirrors: plain URLs that serve a whole file, read chunk by chunk with Range.

Other UHRP hosts serve a file at an HTTPS URL (a BRC-26 advert's URL), and
so does a CDN. A download draws on such mirrors beside its libp2p peers
(``node.services.fetch``): a mirror worker asks for each chunk's byte range
on up to ``delivery.mirror_connections`` keep-alive connections, and the
scheduler ranks, hedges and drops it like a peer.

Trust: none. A mirror's bytes are checked exactly as a peer's are (each
chunk against the manifest when a peer gave one, else the whole file against
its hash before anything is recorded). A mirror that answers other bytes,
another size, or anything but the asked range is dropped from the download
and counted against it.

Who may name a mirror: the operator (``delivery.cdn_origins``, or
``preferredHosts`` from the operator) names any URL. A URL the operator did
not name (an advert's, an agent's) must resolve only to public addresses, so
nobody can make the node send requests into its own network; set
``delivery.mirror_private_addresses`` for a devnet on one machine. The name
is resolved once when the download starts and again by the HTTP client when
it connects: a DNS answer that changes in between (rebinding) is not caught.

Limits: a response body is read up to the asked range's length and no
further; bodies in flight take their bytes from the node's frame budget;
each piece of an answer (a chunk) has a deadline (``p2p.stream_timeout_s``),
so a mirror that drips bytes costs at most that; redirects are not
followed; the environment's proxy settings are not read.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx
import trio

from node.errors import MirrorFailed, MirrorRefused
from protocols.framing import Budget, OverBudget

__all__ = ["Mirror", "MirrorHttp", "Ranged", "mirror", "origin_of", "MAX_URL_BYTES"]

MAX_URL_BYTES = 2048
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_MAX_POOL = 64  # connections to all mirrors together


def origin_of(url: str) -> str:
    """``scheme://host:port``: what a mirror's measurements and failures are kept under."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


@dataclass(frozen=True)
class Mirror:
    """A URL that serves one content whole."""

    url: str
    trusted: bool  # named by the operator (cdn_origins, its preferredHosts): any address is allowed

    @property
    def key(self) -> str:
        return origin_of(self.url)


def mirror(url: str, *, trusted: bool) -> Mirror:
    """A mirror from a URL, or ``ValueError`` saying what is wrong with it."""
    if len(url.encode()) > MAX_URL_BYTES:
        raise ValueError(f"a mirror URL is at most {MAX_URL_BYTES} bytes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError(f"{url!r}: a mirror URL carries no credentials and no fragment")
    return Mirror(url, trusted)


@dataclass(frozen=True)
class Ranged:
    """A mirror's answer to a range request."""

    data: bytes  # what ``get`` collected (``get_run`` hands pieces over instead)
    size: int  # of the whole file
    content_type: str | None  # the mirror's claim


OnPiece = Callable[[int, bytes], Awaitable[None]]  # a whole piece of a run; shielded, so it must not wait long


class MirrorHttp:
    """The node's one HTTP client for mirrors (a pool of keep-alive connections)."""

    def __init__(
        self,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        budget: Budget,
        allow_private: bool,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.budget = budget
        self.allow_private = allow_private
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=_MAX_POOL, max_keepalive_connections=_MAX_POOL),
            follow_redirects=False,
            trust_env=False,  # config/ is the only reader of the environment
            headers={"user-agent": "overlay-node", "accept-encoding": "identity"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, m: Mirror) -> None:
        """Refuse a mirror the operator did not name that resolves to a non-public address."""
        if m.trusted or self.allow_private:
            return
        parts = urlsplit(m.url)
        host = parts.hostname or ""
        try:
            with trio.fail_after(self.connect_timeout_s):
                infos = await trio.socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except (OSError, trio.TooSlowError) as exc:
            raise MirrorFailed(f"{m.key}: cannot resolve {host!r}: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not _public(address):
                raise MirrorRefused(
                    f"{m.key} resolves to {address}, not a public address (delivery.mirror_private_addresses allows it)"
                )

    async def size(self, m: Mirror) -> tuple[int, str | None]:
        """The size of the file a mirror serves, and its claimed content type."""
        got = await self.get(m, 0, 1, None)
        return got.size, got.content_type

    async def get(self, m: Mirror, start: int, stop: int, total: int | None) -> Ranged:
        """Bytes ``start``..``stop`` (exclusive) of the file, or fewer if the
        file ends sooner and ``total`` is not known; ``total``, when known,
        must be the mirror's size too."""
        parts: list[bytes] = []

        async def keep(index: int, data: bytes) -> None:
            parts.append(data)

        head = await self.get_run(m, start, [stop - start], total, keep)
        return replace(head, data=b"".join(parts))

    async def get_run(self, m: Mirror, start: int, sizes: list[int], total: int | None, on_piece: OnPiece) -> Ranged:
        """The bytes from ``start`` cut into pieces of ``sizes``, in one
        request: ``on_piece(i, data)`` as each is whole, so the first is
        used while the rest arrive. Each piece has ``timeout_s`` to arrive."""
        want = sum(sizes)
        if not self.budget.take(want):
            raise OverBudget(f"no room for {want} bytes now: {self.budget.used} of {self.budget.total} in use")
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.timeout_s) as deadline:
                return await self._get_run(m, start, sizes, total, on_piece, deadline)
            raise MirrorFailed(f"{m.key}: no piece for {self.timeout_s} s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise MirrorFailed(f"{m.key}: {type(exc).__name__}: {exc}") from None
        finally:
            self.budget.give(want)

    async def _get_run(
        self,
        m: Mirror,
        start: int,
        sizes: list[int],
        total: int | None,
        on_piece: OnPiece,
        deadline: trio.CancelScope,
    ) -> Ranged:
        stop = start + sum(sizes)
        headers = {"range": f"bytes={start}-{stop - 1}"}
        async with self._client.stream("GET", m.url, headers=headers) as r:
            head = Ranged(b"", *self._check_head(m, r, start, stop, total))
            if head.size >= 0 and head.size < stop:  # the file ends first: only a lone piece may be short
                sizes = [head.size - start]
            want = sum(sizes)
            buffer = bytearray()
            got = done = 0
            # Leaving httpx's body iterator early would abandon its chain of
            # async generators; a cancel makes its next read end each of them.
            with trio.CancelScope() as cut:
                async for piece in r.aiter_raw():
                    got += len(piece)
                    if got > want:
                        cut.cancel()
                        continue
                    buffer += piece
                    while done < len(sizes) and len(buffer) >= sizes[done]:
                        data = bytes(buffer[: sizes[done]])
                        del buffer[: sizes[done]]
                        # Shielded, so a cancel lands in httpx's next read (which
                        # ends its generators), not here between them.
                        with trio.CancelScope(shield=True):
                            await on_piece(done, data)
                        done += 1
                        deadline.deadline = trio.current_time() + self.timeout_s
            if got > want:
                raise MirrorFailed(f"{m.key} sent more than the {want} bytes asked for")
            if head.size < 0:  # a whole file of undeclared length: what arrived
                if total is not None and got != total:
                    raise MirrorFailed(f"{m.key} serves a file of {got} bytes, not the {total} wanted")
                if buffer:
                    await on_piece(done, bytes(buffer))
                return replace(head, size=got)
            if got != want:
                raise MirrorFailed(f"{m.key} sent {got} of {want} bytes")
            return head

    @staticmethod
    def _check_head(m: Mirror, r: httpx.Response, start: int, stop: int, total: int | None) -> tuple[int, str | None]:
        """The file's size (-1: a whole file of undeclared length) and claimed
        type, from an answer that must be the range asked for."""
        encoding = r.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise MirrorFailed(f"{m.key} answered with content-encoding {encoding!r}, which was not asked for")
        if r.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", "").strip())
            if match is None:
                raise MirrorFailed(f"{m.key}: a 206 without a byte Content-Range")
            first, last, size = map(int, match.groups())
            if first != start or last + 1 != min(stop, size):
                raise MirrorFailed(f"{m.key} sent bytes {first}-{last}/{size} for {start}-{stop - 1}")
        elif r.status_code == 200:
            # The whole file instead of a range: acceptable only when that is all that was asked for.
            declared = r.headers.get("content-length", "")
            size = int(declared) if declared.isdigit() else -1
            if start != 0 or size > stop:
                raise MirrorFailed(f"{m.key} does not serve byte ranges (answered 200 to a Range request)")
        else:
            raise MirrorFailed(f"{m.key} answered {r.status_code} {r.reason_phrase}")
        if total is not None and size not in (total, -1):
            raise MirrorFailed(f"{m.key} serves a file of {size} bytes, not the {total} wanted")
        return size, r.headers.get("content-type")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global address, and so is any IPv4 address it carries (an IPv6 address
    that embeds 127.0.0.1 or 169.254.169.254 reaches them where it is routed)."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64 or address in _V4_COMPATIBLE:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(v4.is_global for v4 in embedded if v4 is not None)
