"""Strict, size-limited msgpack decoding shared by every wire format."""

from __future__ import annotations

from typing import Any

import msgpack

from protocols.errors import RemoteProtocolError

__all__ = ["unpack"]


def unpack(data: bytes, error: type[RemoteProtocolError], *, max_bin: int, max_str: int, max_array: int) -> Any:
    """Decode ``data``; maps and extension types are refused, limits apply
    before allocation, and any failure raises ``error``."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bin,
            max_str_len=max_str,
            max_array_len=max_array,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise error(f"not valid msgpack: {exc}") from None
