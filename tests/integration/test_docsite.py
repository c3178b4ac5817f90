"""The docsite layout antsibull-docs renders: docs/docsite/extra-docs.yml, links.yml and the RST
pages that scripts/docsite.py generates from docs/*.md and the playbooks.

* the generated files are up to date (a docs change without a rerun of the script fails here);
* every docs page (but the developer pages) and every playbook is in the docsite, no content block
  (code block, table, heading) was lost in the conversion;
* ``antsibull-docs lint-collection-docs --plugin-docs`` accepts the collection: extra docs, links,
  RST (rstcheck), and every module's and role's documentation and markup.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_targets import REPO_ROOT

pytestmark = pytest.mark.integration

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import docsite  # noqa: E402  pylint: disable=wrong-import-position

DOCSITE = REPO_ROOT / "docs" / "docsite"


def test_generated_pages_are_up_to_date() -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "docsite.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_page_and_playbook_is_in_the_docsite() -> None:
    index = yaml.safe_load((DOCSITE / "extra-docs.yml").read_text(encoding="utf-8"))
    refs = [entry["ref"] for section in index["sections"] for entry in section["toctree"]]
    pages = sorted(p.stem for p in (REPO_ROOT / "docs").glob("*.md"))
    for page in pages:
        if page in docsite.DEVELOPER_PAGES:
            assert page not in refs
            continue
        assert page in refs, "docs/%s.md is not in extra-docs.yml" % page
        assert (DOCSITE / "rst" / (page + ".rst")).is_file()
    assert "awx" in refs and "playbooks" in refs
    for ref in refs:
        text = (DOCSITE / "rst" / (ref + ".rst")).read_text(encoding="utf-8")
        assert ".. _ansible_collections.storage.mobility.docsite.%s:" % ref in text

    playbooks_page = (DOCSITE / "rst" / "playbooks.rst").read_text(encoding="utf-8")
    for playbook in sorted((REPO_ROOT / "playbooks").glob("*.yml")):
        assert "storage.mobility.%s\n" % playbook.stem in playbooks_page, "%s is not documented" % playbook.name


@pytest.mark.parametrize("page", docsite.pages())
def test_conversion_keeps_every_block(page: str) -> None:
    markdown = (REPO_ROOT / "docs" / (page + ".md")).read_text(encoding="utf-8")
    rst = (DOCSITE / "rst" / (page + ".rst")).read_text(encoding="utf-8")
    fences = len(re.findall(r"^```", markdown, re.M)) // 2
    assert rst.count(".. code-block::") == fences
    tables = len(re.findall(r"^\|[ :-]*-[ :|-]*\|?\s*$", markdown, re.M))
    assert rst.count(".. list-table::") == tables
    in_code = False
    headings = 0
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            headings += 1
    lines = rst.splitlines()
    underlines = sum(1 for before, line in zip(lines, lines[1:])
                     if before.strip() and re.match(r"^([=\-~^\"'])\1{2,}$", line) and len(line) >= len(before))
    assert underlines == headings


def test_antsibull_docs_lints_the_collection(tmp_path: Path) -> None:
    tool = Path(sys.executable).parent / "antsibull-docs"
    if not tool.is_file():
        found = shutil.which("antsibull-docs")
        if not found:
            pytest.fail("antsibull-docs not found: run scripts/setup.sh (requirements-dev.txt)", pytrace=False)
        tool = Path(found)
    # The linter wants the collection at ansible_collections/<namespace>/<name>.
    tree = tmp_path / "ansible_collections" / "storage"
    tree.mkdir(parents=True)
    (tree / "mobility").symlink_to(REPO_ROOT, target_is_directory=True)
    env = {"PATH": "%s:/usr/bin:/bin" % Path(sys.executable).parent, "HOME": str(tmp_path),
           "ANSIBLE_COLLECTIONS_PATH": str(tmp_path), "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp")}
    proc = subprocess.run([str(tool), "lint-collection-docs", "--plugin-docs", "--check-extra-docs-refs",
                           str(tree / "mobility")], capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
