"""Choosing a rendition: the seed's ``quality`` parameter.

``quality`` names a rendition (``720p``, or ``4k`` for 2160p), a place on
the ladder (``low``, ``medium``, ``high``: the session's ``streamingConfig``
values) or is ``auto``. ``auto`` with an estimate of the client's bandwidth picks the
highest rendition that needs at most ``HEADROOM`` of it (the lowest when none
fits); with no estimate it leaves the choice to the player (the whole
ladder: players adapt by themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Rendition", "HEADROOM", "pick"]

HEADROOM = 0.8  # a rendition may use this share of the measured bandwidth
_ALIASES = {"4k": "2160p", "uhd": "2160p", "hd": "720p", "fullhd": "1080p"}


@dataclass(frozen=True)
class Rendition:
    name: str
    height: int
    bandwidth_bps: int
    path: str  # where a player gets it (a master playlist of it alone)


def pick(renditions: Sequence[Rendition], quality: str, estimate_bps: float | None) -> Rendition | None:
    """The rendition ``quality`` asks for; None: the whole ladder (``auto``
    without an estimate). Raises ``LookupError`` for a quality the set lacks."""
    ladder = sorted(renditions, key=lambda r: r.height)
    wanted = _ALIASES.get(quality.lower(), quality.lower())
    if wanted == "auto":
        if estimate_bps is None or not ladder:
            return None
        fitting = [r for r in ladder if r.bandwidth_bps <= HEADROOM * estimate_bps]
        return fitting[-1] if fitting else ladder[0]
    if ladder and wanted in ("low", "medium", "high"):
        return ladder[{"low": 0, "medium": (len(ladder) - 1) // 2, "high": -1}[wanted]]
    for r in ladder:
        if wanted in (r.name.lower(), f"{r.height}p"):
            return r
    names = ", ".join(["auto", "low", "medium", "high", *(r.name for r in ladder)])
    raise LookupError(f"no {quality!r} rendition; this video has {names}")
