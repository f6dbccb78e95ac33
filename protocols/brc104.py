"""BRC-103 mutual authentication over HTTP (BRC-104), the server side.

What the seed calls BRC-31 (Authrite) was superseded by BRC-103/104; this is
what ``@bsv/sdk``'s ``AuthFetch`` speaks (``shared/reference/brc.md`` §3).

Participants: an agent (client) with an identity key, this node (server)
with its own. Flow:

1. Handshake, ``POST /.well-known/auth``: the client sends ``initialRequest``
   (its identity key and session nonce nA); the server answers
   ``initialResponse`` with its own session nonce nB, signed over
   ``nA ‖ nB`` with key ID ``"<nA> <nB>"`` for the client.
2. Every later request carries ``x-bsv-auth-*`` headers: a fresh nonce r, the
   server's session nonce, a request id, and a signature over the request
   preimage (key ID ``"<r> <nB>"``). The server answers with the same
   headers, signed over the response preimage for the client.

The message formats both sides sign are ``overlay_client.brc104``.
Signatures are BRC-3 (``overlay_client.brc42``) under protocol
``[2, "auth message signature"]``. Session nonces are 48 bytes (16 random,
32 HMAC), verifiable by their creator alone, as the reference's are.
Version ``"0.1"`` (what the code sends; the BRC text says 1.0).
Non-goals: certificates (BRC-52; requested sets are ignored), I/O, clocks.
Replays: a request is accepted only inside a live session, and a session
remembers every request nonce it has accepted, for as long as it lives, so
a replayed request is always refused. Memory is bounded by ending sessions
instead of forgetting nonces: a session ends after ``max_requests``
requests, after ``session_ttl_s`` idle, or (least recently used first) when
all sessions together remember ``max_remembered`` nonces. A client whose
session ended gets ``session_not_found`` and handshakes again.
Limits: handshake bodies 64 KiB; ``max_sessions`` sessions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overlay_client.brc104 import (
    AUTH_VERSION,
    auth_signature,
    request_preimage,
    response_preimage,
    verify_auth_signature,
)
from protocols.errors import RemoteProtocolError

__all__ = [
    "AuthError",
    "MalformedAuthMessage",
    "HandshakeTooLarge",
    "AuthServer",
    "Session",
    "create_nonce",
    "verify_nonce",
    "session_secret",
]

MAX_HANDSHAKE_BYTES = 64 * 1024
_NONCE_RANDOM = 16


class AuthError(RemoteProtocolError):
    """A handshake or request failed authentication; ``code`` is for the JSON error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MalformedAuthMessage(AuthError):
    """The handshake body is not a JSON object (a bad request rather than a failed authentication)."""


class HandshakeTooLarge(AuthError):
    """A handshake message over ``MAX_HANDSHAKE_BYTES``."""


# -- session nonces -------------------------------------------------------------


def create_nonce(secret: bytes, random16: bytes) -> str:
    """A 48-byte session nonce only the holder of ``secret`` can vouch for."""
    return base64.b64encode(random16 + hmac.digest(secret, random16, "sha256")).decode()


def verify_nonce(secret: bytes, nonce: str) -> bool:
    raw = _b64(nonce)
    if raw is None or len(raw) != _NONCE_RANDOM + 32:
        return False
    return hmac.compare_digest(raw[_NONCE_RANDOM:], hmac.digest(secret, raw[:_NONCE_RANDOM], "sha256"))


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# -- the server ---------------------------------------------------------------------


@dataclass
class Session:
    peer_key: bytes  # the client's identity key
    peer_nonce: str  # the client's session nonce
    my_nonce: str  # ours
    last_used: float
    seen: set[int] = field(default_factory=set)  # hashes of the request nonces accepted, for replays


def _hex_key(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 66:
        raise AuthError("invalid_identity_key", "identityKey must be a 33-byte compressed key in hex")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise AuthError("invalid_identity_key", "identityKey is not hex") from None
    if key[0] not in (2, 3):
        raise AuthError("invalid_identity_key", "identityKey is not a compressed secp256k1 key")
    return key


class AuthServer:
    def __init__(
        self,
        private_key: bytes,
        public_key: bytes,
        secret: bytes,
        random: Callable[[int], bytes],
        *,
        max_sessions: int = 10_000,
        session_ttl_s: float = 24 * 3600,
        max_requests: int = 1_000_000,
        max_remembered: int = 2_000_000,  # about 120 MB of nonce hashes at most
    ) -> None:
        self.private_key, self.public_key = private_key, public_key
        self.secret = secret
        self.random = random
        self.max_sessions, self.session_ttl_s = max_sessions, session_ttl_s
        self.max_requests, self.max_remembered = max_requests, max_remembered
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # by our session nonce, least recent first
        self.remembered = 0  # nonces remembered by all sessions

    def handshake(self, body: bytes, now: float) -> dict[str, Any]:
        """Answer an ``initialRequest`` (JSON bytes) with an ``initialResponse``."""
        if len(body) > MAX_HANDSHAKE_BYTES:
            raise HandshakeTooLarge("too_large", f"handshake messages are at most {MAX_HANDSHAKE_BYTES} bytes")
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedAuthMessage("invalid_json", "the handshake body is not JSON") from None
        if not isinstance(message, dict):
            raise MalformedAuthMessage("invalid_message", "the handshake body must be a JSON object")
        if message.get("version") != AUTH_VERSION:
            raise AuthError("unsupported_version", f"auth version must be {AUTH_VERSION!r}")
        if message.get("messageType") != "initialRequest":
            raise AuthError("unsupported_message", "only initialRequest is accepted here (no certificates)")
        peer_key = _hex_key(message.get("identityKey"))
        their_nonce = message.get("initialNonce")
        if not isinstance(their_nonce, str) or not 0 < len(their_nonce) <= 256 or _b64(their_nonce) is None:
            raise AuthError("invalid_nonce", "initialNonce must be base64")
        my_nonce = create_nonce(self.secret, self.random(_NONCE_RANDOM))
        self._expire(now)
        self.sessions[my_nonce] = Session(peer_key, their_nonce, my_nonce, now)
        if len(self.sessions) > self.max_sessions:
            self._end_oldest()
        data = (_b64(their_nonce) or b"") + (_b64(my_nonce) or b"")
        signature = auth_signature(self.private_key, data, f"{their_nonce} {my_nonce}", peer_key)
        return {
            "version": AUTH_VERSION,
            "messageType": "initialResponse",
            "identityKey": self.public_key.hex(),
            "initialNonce": my_nonce,
            "yourNonce": their_nonce,
            "requestedCertificates": {"certifiers": [], "types": {}},
            "signature": list(signature),
        }

    def _end_oldest(self) -> None:
        _, session = self.sessions.popitem(last=False)
        self.remembered -= len(session.seen)

    def _expire(self, now: float) -> None:
        while self.sessions:
            oldest = next(iter(self.sessions.values()))
            if now - oldest.last_used <= self.session_ttl_s:
                break
            self._end_oldest()

    def session_of(self, headers: dict[str, str]) -> Session:
        """The session a request's ``x-bsv-auth-*`` headers name, checked as far
        as they can be without its body (so a stranger's body is never read)."""
        if headers.get("x-bsv-auth-version") != AUTH_VERSION:
            raise AuthError("unsupported_version", f"x-bsv-auth-version must be {AUTH_VERSION!r}")
        your_nonce = headers.get("x-bsv-auth-your-nonce", "")
        if not verify_nonce(self.secret, your_nonce):
            raise AuthError("invalid_nonce", "x-bsv-auth-your-nonce is not a session nonce of this node")
        session = self.sessions.get(your_nonce)
        if session is None:
            raise AuthError("session_not_found", "no session for this nonce (expired or unknown): handshake again")
        if _hex_key(headers.get("x-bsv-auth-identity-key")) != session.peer_key:
            raise AuthError("identity_mismatch", "the identity key does not own this session")
        nonce = headers.get("x-bsv-auth-nonce", "")
        request_id = _b64(headers.get("x-bsv-auth-request-id", ""))
        if _b64(nonce) is None or not nonce or request_id is None or len(request_id) != 32:
            raise AuthError(
                "invalid_headers", "x-bsv-auth-nonce and x-bsv-auth-request-id must be base64 (request id: 32 bytes)"
            )
        if hash(nonce) in session.seen:
            raise AuthError("replayed", "this request nonce was used before in this session")
        return session

    def verify_request(
        self,
        headers: dict[str, str],
        method: str,
        path: str,
        query: str,
        all_headers: list[tuple[str, str]],
        body: bytes,
        now: float,
    ) -> tuple[Session, bytes]:
        """Check a request's ``x-bsv-auth-*`` headers and signature; (session, request id)."""
        session = self.session_of(headers)
        nonce = headers.get("x-bsv-auth-nonce", "")
        request_id = _b64(headers.get("x-bsv-auth-request-id", ""))
        assert request_id is not None  # session_of checked it
        try:
            signature = bytes.fromhex(headers.get("x-bsv-auth-signature", ""))
        except ValueError:
            raise AuthError("invalid_signature", "x-bsv-auth-signature is not hex") from None
        # The signature covers the request id and is made with a key derived
        # from the nonce, so a replay repeats both: remembering the nonce is enough.
        seen = hash(nonce)
        preimage = request_preimage(request_id, method, path, query, all_headers, body)
        if not verify_auth_signature(
            session.peer_key, preimage, signature, f"{nonce} {session.my_nonce}", self.private_key
        ):
            raise AuthError("invalid_signature", "the request signature does not verify")
        if len(session.seen) >= self.max_requests:
            self.sessions.pop(session.my_nonce)
            self.remembered -= len(session.seen)
            raise AuthError(
                "session_not_found", "this session has made as many requests as a session may: handshake again"
            )
        session.seen.add(seen)
        self.remembered += 1
        session.last_used = now
        self.sessions.move_to_end(session.my_nonce)
        while self.remembered > self.max_remembered and len(self.sessions) > 1:
            self._end_oldest()  # never the session just used: it is the newest
        return session, request_id

    def sign_response(
        self, session: Session, request_id: bytes, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        """The ``x-bsv-auth-*`` headers for a response."""
        nonce = base64.b64encode(self.random(32)).decode()
        preimage = response_preimage(request_id, status, headers, body)
        signature = auth_signature(self.private_key, preimage, f"{nonce} {session.peer_nonce}", session.peer_key)
        return [
            ("x-bsv-auth-version", AUTH_VERSION),
            ("x-bsv-auth-identity-key", self.public_key.hex()),
            ("x-bsv-auth-nonce", nonce),
            ("x-bsv-auth-your-nonce", session.peer_nonce),
            ("x-bsv-auth-request-id", base64.b64encode(request_id).decode()),
            ("x-bsv-auth-signature", signature.hex()),
        ]


def session_secret(private_key: bytes) -> bytes:
    """The key session nonces are made with: derived from the node key, so
    nonces survive a restart only as long as the sessions do (in memory)."""
    return hashlib.sha256(b"overlay-node session nonce\x00" + private_key).digest()
