"""The README documents every setting, with the default the code uses."""

from __future__ import annotations

import re

from app.counters import Counters
from app.settings import Settings, default_text, env_name
from tests.support import ROOT


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", (ROOT / "README.md").read_text(), re.M)
    return {name: default.strip().strip("`") for name, default in rows}


def test_every_setting_is_documented_with_its_default() -> None:
    table = documented()
    for field in Settings.model_fields:
        name = env_name(field)
        assert name in table, f"{name} is missing from the README's configuration table"
        default = default_text(field)
        assert table[name] == default, f"{name}: README says {table[name]}, code says {default}"


def test_no_undocumented_leftovers() -> None:
    names = {env_name(field) for field in Settings.model_fields}
    assert set(documented()) <= names


def test_every_counter_is_listed() -> None:
    text = (ROOT / "README.md").read_text()
    operations = text[
        text.index("## Operations") : text.index("\n## ", text.index("## Operations") + 1)
    ]
    listed = set(re.findall(r"^- `([a-z0-9_]+)`(?:, `([a-z0-9_]+)`)?:", operations, re.M))
    names = {name for pair in listed for name in pair if name}
    assert names == set(Counters.help())
