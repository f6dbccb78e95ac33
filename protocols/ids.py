"""Every libp2p protocol ID and gossipsub topic the node speaks, in one place.

A breaking change to a protocol's messages gets a new version here (iroh's
``ALPN`` rule), so an old peer fails negotiation instead of misreading bytes.

| ID | who opens it | what flows (framing) |
|---|---|---|
| ``CHUNK`` | a downloader | pipelined manifest/chunk/have requests and replies (``chunk_wire``); a chunk request may accept compressed replies |
| ``CHUNK_V1`` | a downloader of an older version | the same, never compressed (a server answers both; a client offers ``CHUNK`` first) |
| ``ADVERT_SYNC`` | a newly connected peer | the host's live adverts, then EOF (``advert``) |
| ``ADVERT_PUSH`` | a node that is stopping | its withdrawals, an empty frame; the peer answers an empty frame once it has applied them |
| ``USAGE_SYNC`` | a newly connected peer | quota records and usage messages, then EOF (``usage_sync``) |
| ``QUOTA_LEASE`` | a node in strict mode | one lease request, one reply (``usage_sync``) |
| ``REPLICATE`` | a node short of copies of pinned content | one replica request, one reply (``replication``) |
| ``PROTECTED_KEY`` | a node granted a protected content | one request (the content hash), one reply: the key as BRC-78 to it, and the grants |
| ``PEER_EXCHANGE`` | a node short of peers | one msgpack list of addresses, then EOF (``peer_exchange``) |

Every stream but ``PEER_EXCHANGE`` carries length-prefixed frames
(``protocols.framing``).
"""

from __future__ import annotations

__all__ = [
    "CHUNK",
    "CHUNK_V1",
    "ADVERT_SYNC",
    "ADVERT_PUSH",
    "USAGE_SYNC",
    "QUOTA_LEASE",
    "REPLICATE",
    "PROTECTED_KEY",
    "PEER_EXCHANGE",
    "ADVERT_TOPIC",
]

CHUNK = "/uhrp-overlay/chunk/1.1.0"
CHUNK_V1 = "/uhrp-overlay/chunk/1.0.0"
ADVERT_SYNC = "/uhrp-overlay/adverts/1.0.0"
ADVERT_PUSH = "/uhrp-overlay/advert-push/1.0.0"
USAGE_SYNC = "/uhrp-overlay/usage/1.0.0"
QUOTA_LEASE = "/uhrp-overlay/quota-lease/1.0.0"
REPLICATE = "/uhrp-overlay/replicate/1.0.0"
PROTECTED_KEY = "/uhrp-overlay/protected-key/1.0.0"
PEER_EXCHANGE = "/uhrp-overlay/peers/1.0.0"

ADVERT_TOPIC = "tm_uhrp"  # the BRC-26 topic manager's name; usage gossip uses usage_sync.topics from config
