"""The documentation lists what the code accepts."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from config.settings import ENV_ALIASES, ENV_VARS, SECTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_doc_lists_every_setting_and_variable() -> None:
    text = (DOCS / "configuration.md").read_text()
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert f"`[{section}] {f.name}`" in text, f"{section}.{f.name} is undocumented"
    for var in [*ENV_VARS, *ENV_ALIASES]:
        assert f"`{var}`" in text, f"{var} is undocumented"
