"""Every changelog fragment is what antsibull-changelog (and ansible-test's changelog sanity test)
reads: a mapping of known sections to lists of strings. An unquoted item with ``: `` in it parses
as a mapping and fails the sanity test only at the end of a long CI run; this finds it in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FRAGMENTS = sorted((ROOT / "changelogs" / "fragments").glob("*.yml"))
SECTIONS = {name for name, _title in yaml.safe_load((ROOT / "changelogs" / "config.yaml").read_text())["sections"]}


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=[f.name for f in FRAGMENTS])
def test_a_fragment_is_known_sections_of_strings(fragment):
    data = yaml.safe_load(fragment.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data, f"{fragment.name}: not a mapping of sections"
    for section, items in data.items():
        assert section in SECTIONS | {"release_summary"}, f"{fragment.name}: unknown section {section!r}"
        if section == "release_summary":
            assert isinstance(items, str)
            continue
        assert isinstance(items, list), f"{fragment.name}: {section} is not a list"
        for item in items:
            assert isinstance(item, str), f"{fragment.name}: an item of {section} is a {type(item).__name__}, quote it: {item!r}"
