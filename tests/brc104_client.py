"""An independent BRC-103/104 client for tests: ``overlay_client.brc42`` signatures
and the message table of shared/reference/brc.md §3.2, nothing from the
server side but the preimage layout (checked against @bsv/sdk's vectors)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from typing import Any

import coincurve

from overlay_client import brc42
from overlay_client.brc104 import request_preimage, response_preimage

A_PRIV, B_PRIV = b"\xaa" * 32, b"\xbb" * 32
A_PUB = coincurve.PrivateKey(A_PRIV).public_key.format(compressed=True)
B_PUB = coincurve.PrivateKey(B_PRIV).public_key.format(compressed=True)


class Client:
    def __init__(self, private_key: bytes = A_PRIV) -> None:
        self.private_key = private_key
        self.public_key = coincurve.PrivateKey(private_key).public_key.format(compressed=True)
        self.nonce = base64.b64encode(private_key[:1] * 48).decode()
        self.server_nonce = ""
        self.server_key = B_PUB
        self.counter = itertools.count(1)

    def hello(self) -> bytes:
        return json.dumps(
            {
                "version": "0.1",
                "messageType": "initialRequest",
                "identityKey": self.public_key.hex(),
                "initialNonce": self.nonce,
                "requestedCertificates": {"certifiers": [], "types": {}},
            }
        ).encode()

    def accept(self, reply: dict[str, Any]) -> None:
        data = base64.b64decode(self.nonce) + base64.b64decode(reply["initialNonce"])
        invoice = brc42.invoice_number(2, "auth message signature", f"{self.nonce} {reply['initialNonce']}")
        self.server_key = bytes.fromhex(reply["identityKey"])
        assert brc42.verify(self.server_key, data, bytes(reply["signature"]), invoice, self.private_key)
        self.server_nonce = reply["initialNonce"]

    def headers(self, method: str, path: str, query: str, body: bytes, extra: list[tuple[str, str]]) -> dict[str, str]:
        n = next(self.counter)
        nonce = base64.b64encode(n.to_bytes(32, "big")).decode()
        rid = hashlib.sha256(n.to_bytes(8, "big")).digest()
        invoice = brc42.invoice_number(2, "auth message signature", f"{nonce} {self.server_nonce}")
        sig = brc42.sign(
            self.private_key, request_preimage(rid, method, path, query, extra, body), invoice, self.server_key
        )
        return {
            "x-bsv-auth-version": "0.1",
            "x-bsv-auth-identity-key": self.public_key.hex(),
            "x-bsv-auth-nonce": nonce,
            "x-bsv-auth-your-nonce": self.server_nonce,
            "x-bsv-auth-signature": sig.hex(),
            "x-bsv-auth-request-id": base64.b64encode(rid).decode(),
        }

    def response_ok(self, headers: dict[str, str], status: int, body: bytes) -> bool:
        """Does the server's signature cover this response?"""
        rid = base64.b64decode(headers["x-bsv-auth-request-id"])
        invoice = brc42.invoice_number(2, "auth message signature", f"{headers['x-bsv-auth-nonce']} {self.nonce}")
        signature = bytes.fromhex(headers["x-bsv-auth-signature"])
        return brc42.verify(
            self.server_key, response_preimage(rid, status, [], body), signature, invoice, self.private_key
        )
