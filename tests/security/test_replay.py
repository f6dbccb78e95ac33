"""A signed request is accepted once: its session remembers every nonce for as
long as it lives (finding: a captured DELETE was accepted again after about
2,100 more requests in its session)."""

from __future__ import annotations

import os

import pytest

from protocols.brc104 import AuthError, AuthServer, session_secret
from tests.brc104_client import B_PRIV, B_PUB, Client


def server(**limits: int) -> AuthServer:
    return AuthServer(B_PRIV, B_PUB, session_secret(B_PRIV), os.urandom, **limits)


def send(s: AuthServer, headers: dict[str, str], path: str = "/v1/content/x", now: float = 1.0) -> None:
    s.verify_request(headers, "DELETE", path, "", [], b"", now=now)


def test_a_request_replayed_after_ten_thousand_others_is_refused() -> None:
    s, c = server(), Client()
    c.accept(s.handshake(c.hello(), now=0))
    captured = c.headers("DELETE", "/v1/content/x", "", b"", [])
    send(s, captured)
    for _ in range(10_000):
        send(s, c.headers("DELETE", "/v1/content/x", "", b"", []))
    with pytest.raises(AuthError) as refused:
        send(s, captured)
    assert refused.value.code == "replayed"


def test_a_session_that_reaches_its_request_limit_ends_and_its_requests_stay_refused() -> None:
    s, c = server(max_requests=3), Client()
    c.accept(s.handshake(c.hello(), now=0))
    sent = [c.headers("DELETE", "/v1/content/x", "", b"", []) for _ in range(4)]
    for h in sent[:3]:
        send(s, h)
    with pytest.raises(AuthError) as ended:
        send(s, sent[3])
    assert ended.value.code == "session_not_found"  # the client handshakes again
    with pytest.raises(AuthError) as gone:
        send(s, sent[0])  # a replay into the ended session finds no session at all
    assert gone.value.code == "session_not_found"


def test_memory_is_bounded_by_ending_the_least_recent_session_not_by_forgetting() -> None:
    s = server(max_remembered=10)
    old, new = Client(b"\x01" * 32), Client(b"\x02" * 32)
    old.accept(s.handshake(old.hello(), now=0))
    new.accept(s.handshake(new.hello(), now=0))
    first = old.headers("DELETE", "/v1/content/x", "", b"", [])
    send(s, first)
    for _ in range(10):
        send(s, new.headers("DELETE", "/v1/content/x", "", b"", []))
    assert s.remembered <= 10 and len(s.sessions) == 1  # the old session ended whole
    with pytest.raises(AuthError) as refused:
        send(s, first)
    assert refused.value.code == "session_not_found"
