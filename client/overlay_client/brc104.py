"""BRC-104 message formats: what an agent and a node sign and check.

Both sides build the same preimages: the agent signs a request's, the node
checks it and signs its response's, the agent checks that. The handshake and
the node's session state are the server side, ``protocols.brc104``; the
formats are here so an agent needs only this distribution
(``shared/reference/brc.md`` §3 has the byte layout and vectors).
Signatures are BRC-3 (``overlay_client.brc42``) under protocol
``[2, "auth message signature"]`` with key ID ``"<nonce> <their session nonce>"``.
"""

from __future__ import annotations

from collections.abc import Iterable

from overlay_client import brc42

__all__ = [
    "AUTH_VERSION",
    "PROTOCOL",
    "varint",
    "request_preimage",
    "response_preimage",
    "signed_headers",
    "auth_signature",
    "verify_auth_signature",
]

AUTH_VERSION = "0.1"
PROTOCOL = "auth message signature"
_MINUS_ONE = b"\xff" * 9  # VarInt(-1): "absent"


def varint(n: int) -> bytes:
    """Bitcoin's VarInt."""
    if n < 0:
        raise ValueError("VarInt of a negative number")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def _varint(n: int) -> bytes:
    return _MINUS_ONE if n < 0 else varint(n)


def _field(data: bytes | None) -> bytes:
    return _MINUS_ONE if data is None else _varint(len(data)) + data


def _invoice(key_id: str) -> str:
    return brc42.invoice_number(2, PROTOCOL, key_id)


def auth_signature(private_key: bytes, data: bytes, key_id: str, counterparty: bytes) -> bytes:
    return brc42.sign(private_key, data, _invoice(key_id), counterparty)


def verify_auth_signature(signer: bytes, data: bytes, signature: bytes, key_id: str, my_private: bytes) -> bool:
    return brc42.verify(signer, data, signature, _invoice(key_id), my_private)


# -- BRC-104 preimages ----------------------------------------------------------


def signed_headers(headers: Iterable[tuple[str, str]], *, request: bool) -> list[tuple[str, str]]:
    """The headers a signature covers, lower-cased and sorted: ``x-bsv-*`` except
    ``x-bsv-auth*``, ``authorization``, and (requests only) ``content-type``
    without its parameters."""
    out = []
    for key, value in headers:
        k = key.lower()
        if (k.startswith("x-bsv-") and not k.startswith("x-bsv-auth")) or k == "authorization":
            out.append((k, value))
        elif request and k == "content-type":
            out.append((k, value.split(";", 1)[0].strip()))
    return sorted(out)


def _headers_field(headers: list[tuple[str, str]]) -> bytes:
    parts = [_varint(len(headers))]
    for k, v in headers:
        parts += [_field(k.encode()), _field(v.encode())]
    return b"".join(parts)


def request_preimage(
    request_id: bytes, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    """What the client signed: ``query`` includes its ``?``; an empty body is "absent"."""
    return b"".join(
        [
            request_id,
            _field(method.encode()),
            _field(path.encode() or None),
            _field(query.encode() or None),
            _headers_field(signed_headers(headers, request=True)),
            _field(body or None),
        ]
    )


def response_preimage(request_id: bytes, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """What the server signs; the body length is always written (0 when empty),
    as ``AuthFetch`` rebuilds it."""
    return b"".join(
        [request_id, _varint(status), _headers_field(signed_headers(headers, request=False)), _varint(len(body)), body]
    )
