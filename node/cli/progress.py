"""What the CLI shows while it works and after: sizes in binary units, and an
aria2-like progress line on stderr, ``[add video.mp4 95.4MiB/200.0MiB(47%)
DL:312.0MiB/s ETA:0s]``, drawn only when stderr is a terminal and cleared
before the result is printed."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

__all__ = ["human", "plural", "size", "progress", "Progress", "fraction_progress"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 MiB``."""
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def plural(n: int, word: str) -> str:
    """``1 chunk``, ``2 chunks``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def size(text: str) -> int:
    """A byte count: a number with an optional K, M, G, T or P (powers of 1024,
    ``B``/``iB`` allowed after it), e.g. ``500M``, ``1.5G``, ``10GiB``."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in _SIZE_UNITS else ""
    try:
        number = float(t[: len(t) - len(unit)])
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 1.5G, 10GiB)")
    return round(number * _SIZE_UNITS[unit])


def _iec(n: float | None) -> str:
    return "?" if n is None else human(n).replace(" ", "")


class _Line(tqdm):  # type: ignore[misc]  # tqdm ships no types
    """tqdm with the fields an aria2-like line needs, in binary units."""

    sources: int | None = None

    @property
    def format_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = super().format_dict
        total, done, rate = d["total"], d["n"], d["rate"]
        eta = (total - done) / rate if rate and total else None
        d.update(
            done_iec=_iec(done),
            total_iec=_iec(total),
            pct=f"({100 * done / total:.0f}%)" if total else "",
            cn=f" CN:{self.sources}" if self.sources is not None else "",
            rate_iec=f"{_iec(rate)}/s" if rate else "-",
            eta_s="" if eta is None else f" ETA:{_duration(eta)}",
        )
        return d


def _duration(seconds: float) -> str:
    s = math.ceil(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """A running progress line: ``advance(n)`` bytes, ``total`` once known, ``sources``."""

    def __init__(self, bar: _Line | None) -> None:
        self._bar = bar

    @property
    def drawn(self) -> bool:
        """Whether a line is on the terminal (stderr is one, and not ``--json``)."""
        return self._bar is not None

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_done(self, n: int) -> None:
        """``n`` bytes done in all (for work whose bytes are counted elsewhere)."""
        if self._bar is not None and n > self._bar.n:
            self._bar.update(n - self._bar.n)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def set_sources(self, n: int) -> None:
        if self._bar is not None:
            self._bar.sources = n


@contextmanager
def progress(label: str, total: int | None, *, enabled: bool = True, upload: bool = False) -> Iterator[Progress]:
    """A progress line for ``label`` while the block runs (nothing when
    stderr is not a terminal); the line is cleared when the block ends. The
    rate is aria2's ``DL:``, or ``UP:`` for an ``upload``."""
    if not (enabled and sys.stderr.isatty()):
        yield Progress(None)
        return
    fmt = "[{desc} {done_iec}/{total_iec}{pct}{cn} %s:{rate_iec}{eta_s}]" % ("UP" if upload else "DL")
    with _Line(total=total, desc=label, unit="B", bar_format=fmt, leave=False, file=sys.stderr, mininterval=0.2) as bar:
        yield Progress(bar)


@contextmanager
def fraction_progress(label: str, *, enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """A ``[transcode 42% ETA:1m05s]`` line for work measured as a fraction
    done; yields the function that moves it (nothing drawn off a terminal)."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda _: None
        return
    fmt = "[{desc} {percentage:.0f}% ETA:{remaining}]"
    with tqdm(total=1000, desc=label, bar_format=fmt, leave=False, file=sys.stderr, mininterval=0.2) as bar:

        def move(fraction: float) -> None:
            done = round(max(0.0, min(1.0, fraction)) * 1000)
            if done > bar.n:
                bar.update(done - bar.n)

        yield move
