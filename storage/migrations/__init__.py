"""Numbered SQL migrations, one folder per backend: ``<backend>/NNNN_name.sql``."""

from __future__ import annotations

from importlib import resources

__all__ = ["migrations_for"]


def migrations_for(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration of ``backend``, in order."""
    found = []
    for entry in resources.files(__name__).joinpath(backend).iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {versions}")
    return found
