"""Every module's DOCUMENTATION, EXAMPLES and RETURN are YAML that parses, in seconds.

ansible-test sanity (validate-modules) and ansible-doc find the same faults, but only late in a
full run: a ': ' inside a plain sentence of a description makes the whole DOCUMENTATION block
unreadable, and validate-modules then reports every option as undocumented."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

MODULES = sorted((Path(__file__).resolve().parents[2] / "plugins" / "modules").glob("*.py"))
BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def doc_blocks(path: Path) -> dict[str, str]:
    blocks = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in BLOCKS and isinstance(node.value, ast.Constant):
            blocks[node.targets[0].id] = node.value.value
    return blocks


def test_there_are_modules():
    assert len(MODULES) >= 10, MODULES


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_the_doc_blocks_parse_and_name_the_module(path):
    blocks = doc_blocks(path)
    assert set(blocks) == set(BLOCKS), f"{path.name} lacks {set(BLOCKS) - set(blocks)}"
    parsed = {}
    for name, text in blocks.items():
        try:
            parsed[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.name}: {name} is not valid YAML: {exc}")
    assert parsed["DOCUMENTATION"]["module"] == path.stem
    assert isinstance(parsed["DOCUMENTATION"].get("options", {}), dict)
    assert isinstance(parsed["EXAMPLES"], list) and parsed["EXAMPLES"], f"{path.name} has no example"
    assert isinstance(parsed["RETURN"], dict)
