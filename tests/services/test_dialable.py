"""A wildcard listen address becomes the addresses a peer can dial."""

from __future__ import annotations

import socket

from node.p2p import dialable

MACHINE = {socket.AF_INET: ["192.0.2.2", "127.0.0.1"], socket.AF_INET6: ["fd00::2", "::1"]}
PEER = "/p2p/16Uiu2HAmEwyT6stDEs2hgFqKPZREYiZ1BSEq3EQ6FVUmJGfoiMjM"


def test_a_wildcard_becomes_each_address_of_its_family() -> None:
    assert dialable([f"/ip4/0.0.0.0/tcp/4801{PEER}", f"/ip6/::/tcp/4802{PEER}"], MACHINE) == [
        f"/ip4/192.0.2.2/tcp/4801{PEER}",
        f"/ip4/127.0.0.1/tcp/4801{PEER}",
        f"/ip6/fd00::2/tcp/4802{PEER}",
        f"/ip6/::1/tcp/4802{PEER}",
    ]


def test_a_named_address_is_kept_as_it_is() -> None:
    named = [f"/ip4/10.1.2.3/tcp/4801{PEER}", f"/ip4/0.0.0.1/tcp/1{PEER}", f"/dns4/node.example/tcp/4801{PEER}"]
    assert dialable(named, MACHINE) == named
