"""The root of the wire-format exception tree, shared with the node.

``ProtocolError`` is the root. ``LocalProtocolError`` means *we* asked for
something impossible (a bug or bad local input); ``RemoteProtocolError`` means
bytes from outside were malformed or lied. The node's ``protocols.errors``
adds its own formats' errors below these, and ``node.errors`` maps every one
of them to an HTTP status, a JSON code and a chunk-wire code.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError", "InvalidUhrpUrl"]


class ProtocolError(Exception):
    """Root of every error raised by a wire format or protocol state machine."""


class LocalProtocolError(ProtocolError):
    """We asked for something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """Input from outside (a peer, a client, a file) is malformed."""


class InvalidUhrpUrl(RemoteProtocolError):
    """A UHRP URL failed to parse: bad alphabet, checksum, prefix or length."""
