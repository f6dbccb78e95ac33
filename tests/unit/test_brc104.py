"""BRC-103/104 server side: the reference vectors (shared/reference/brc.md §6),
then a handshake and signed requests driven by an independent client."""

from __future__ import annotations

import base64
import itertools
import json

import pytest

from overlay_client import brc42
from overlay_client.brc104 import auth_signature, request_preimage, response_preimage
from protocols.brc104 import AuthError, AuthServer, create_nonce, verify_nonce
from tests.brc104_client import A_PRIV, A_PUB, B_PRIV, B_PUB, Client


def test_initial_response_signature_matches_the_sdk() -> None:
    na, nb = b"\x01" * 48, b"\x02" * 48
    key_id = f"{base64.b64encode(na).decode()} {base64.b64encode(nb).decode()}"
    assert A_PUB.hex().startswith("026a04ab")
    assert auth_signature(B_PRIV, na + nb, key_id, A_PUB).hex() == (
        "3045022100ee6081e06903abd6a90bea25a83e3d9aedcb4ac9751eb804d1fbd24014e4aa1b"
        "02202a30bc9f51e6bd604a8e39dd0e26fc49ac79b2f5cf37ad05b36f150e3b011c6b"
    )


def test_request_preimages_match_auth_fetch() -> None:
    rid = b"\x07" * 32
    assert (
        request_preimage(rid, "GET", "/", "", [], b"")
        == rid + bytes.fromhex("03474554012f") + b"\xff" * 9 + b"\x00" + b"\xff" * 9
    )
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-BSV-Topic", "usage"),
        ("Authorization", "Bearer t"),
    ]
    expected = "".join(
        [
            "04504f5354",
            "092f76312f71756f7461",
            "083f783d3126793d32",
            "03",
            "0d617574686f72697a6174696f6e",
            "084265617265722074",
            "0c636f6e74656e742d74797065",
            "106170706c69636174696f6e2f6a736f6e",
            "0b782d6273762d746f706963",
            "057573616765",
            "077b2261223a317d",
        ]
    )
    assert request_preimage(rid, "POST", "/v1/quota", "?x=1&y=2", headers, b'{"a":1}') == rid + bytes.fromhex(expected)


def test_response_preimage_always_writes_the_body_length() -> None:
    rid = b"\x07" * 32
    assert response_preimage(rid, 200, [("content-type", "text/plain"), ("x-bsv-x", "1")], b"") == (
        rid + bytes.fromhex("c8") + b"\x01" + b"\x07x-bsv-x" + b"\x011" + b"\x00"
    )


def test_nonces_verify_only_for_their_creator() -> None:
    n = create_nonce(b"k" * 32, b"r" * 16)
    assert len(base64.b64decode(n)) == 48 and "=" not in n
    assert verify_nonce(b"k" * 32, n) and not verify_nonce(b"j" * 32, n)
    assert not verify_nonce(b"k" * 32, "not base64!") and not verify_nonce(
        b"k" * 32, base64.b64encode(b"x" * 48).decode()
    )


def server() -> AuthServer:
    counter = itertools.count()
    return AuthServer(B_PRIV, B_PUB, b"s" * 32, lambda n: bytes([next(counter) % 256]) * n)


def test_handshake_then_signed_requests_and_responses() -> None:
    s, c = server(), Client()
    c.accept(s.handshake(c.hello(), now=0))
    body, extra = b'{"x":1}', [("content-type", "application/json")]
    h = c.headers("POST", "/v1/x", "?a=1", body, extra)
    session, rid = s.verify_request(h, "POST", "/v1/x", "?a=1", extra, body, now=1)
    assert session.peer_key == A_PUB
    out = dict(s.sign_response(session, rid, 200, [], b"ok"))
    invoice = brc42.invoice_number(2, "auth message signature", f"{out['x-bsv-auth-nonce']} {c.nonce}")
    assert brc42.verify(
        B_PUB, response_preimage(rid, 200, [], b"ok"), bytes.fromhex(out["x-bsv-auth-signature"]), invoice, A_PRIV
    )
    with pytest.raises(AuthError) as err:  # the same request again
        s.verify_request(h, "POST", "/v1/x", "?a=1", extra, body, now=2)
    assert err.value.code == "replayed"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda h: h.update({"x-bsv-auth-version": "1.0"}), "unsupported_version"),
        (lambda h: h.update({"x-bsv-auth-your-nonce": base64.b64encode(b"\x00" * 48).decode()}), "invalid_nonce"),
        (lambda h: h.update({"x-bsv-auth-identity-key": B_PUB.hex()}), "identity_mismatch"),
        (lambda h: h.update({"x-bsv-auth-signature": "00"}), "invalid_signature"),
        (lambda h: h.update({"x-bsv-auth-request-id": "AAAA"}), "invalid_headers"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(change, code) -> None:  # type: ignore[no-untyped-def]
    s, c = server(), Client()
    c.accept(s.handshake(c.hello(), now=0))
    h = c.headers("GET", "/v1/node", "", b"", [])
    change(h)
    with pytest.raises(AuthError) as err:
        s.verify_request(h, "GET", "/v1/node", "", [], b"", now=1)
    assert err.value.code == code


def test_a_tampered_body_fails_and_bad_handshakes_say_why() -> None:
    s, c = server(), Client()
    c.accept(s.handshake(c.hello(), now=0))
    h = c.headers("POST", "/v1/x", "", b"a", [])
    with pytest.raises(AuthError, match="does not verify"):
        s.verify_request(h, "POST", "/v1/x", "", [], b"b", now=1)
    for body, code in (
        (b"{", "invalid_json"),
        (b"[]", "invalid_message"),
        (json.dumps({"version": "0.1", "messageType": "general"}).encode(), "unsupported_message"),
        (
            json.dumps(
                {"version": "0.1", "messageType": "initialRequest", "identityKey": "zz", "initialNonce": "AA=="}
            ).encode(),
            "invalid_identity_key",
        ),
    ):
        with pytest.raises(AuthError) as err:
            s.handshake(body, now=0)
        assert err.value.code == code
