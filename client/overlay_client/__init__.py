"""The Python client for an overlay node's HTTP API (``overlay_client.client``
has the whole story), and the wire formats an agent shares with the node:
UHRP names (``uhrp``), BRC-42 keys (``brc42``), BRC-104 signatures
(``brc104``), BRC-78 messages (``brc78``) and protected content's sealed
chunks and keys (``protected``).

Its own distribution, ``overlay-node-client``, so an agent installs it
without the node and imports it beside packages of its own named ``node``,
``config``, ``protocols`` or ``storage``.
"""

from overlay_client.client import (
    ApiFailure,
    AsyncNodeClient,
    ClientError,
    ConnectionLost,
    NodeClient,
    NodeUnavailable,
    Retry,
    Source,
)

__all__ = [
    "AsyncNodeClient",
    "NodeClient",
    "Retry",
    "Source",
    "ClientError",
    "NodeUnavailable",
    "ConnectionLost",
    "ApiFailure",
]
