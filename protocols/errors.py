"""The exception tree shared by every wire format and state machine.

``ProtocolError`` is the root. ``LocalProtocolError`` means *we* asked for
something impossible (a bug or bad local input); ``RemoteProtocolError`` means
bytes from outside were malformed or lied. The root and the errors of the
formats an agent speaks too (UHRP names) live in the client distribution,
``overlay_client.errors``, and are re-exported here. Callers that face the network catch
``RemoteProtocolError`` and end only that peer's conversation.

Errors that are neither (a lookup that finds nothing, a range outside the
content) derive from ``ProtocolError`` directly, next to the module that
raises them. ``node.errors`` maps every one of them to an HTTP status, a
JSON code and a chunk-wire code.
"""

from __future__ import annotations

from overlay_client.errors import InvalidUhrpUrl, LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = [
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "InvalidUhrpUrl",
    "InvalidManifest",
    "InvalidRange",
]


class InvalidManifest(RemoteProtocolError):
    """Manifest bytes are malformed, oversized or internally inconsistent."""


class InvalidRange(RemoteProtocolError):
    """An HTTP Range header is malformed (not merely unsatisfiable)."""
