"""Generate the collection's docsite pages (antsibull-docs) from docs/*.md and playbooks/*.yml.

antsibull-docs renders a collection's extra documentation from reStructuredText files in
docs/docsite/rst/, listed in docs/docsite/extra-docs.yml. The pages are written in Markdown in
docs/ (where they are read on a forge and in the installed collection), so this script writes:

* docs/docsite/rst/<page>.rst for every docs/<page>.md (except the developer pages below),
* docs/docsite/rst/playbooks.rst from the leading comment of every playbook in playbooks/,
* docs/docsite/extra-docs.yml listing them.

    python scripts/docsite.py           # write the files
    python scripts/docsite.py --check   # exit 1 and name the files that are not up to date

tests/integration/test_docsite.py runs --check, so a docs change without a rerun fails there.
Needs markdown-it-py (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
DOCSITE = DOCS / "docsite"
RST = DOCSITE / "rst"
LABEL = "ansible_collections.storage.mobility.docsite.%s"

# Pages in this order first, then any other page alphabetically.
ORDER = ["share_migration", "data_mover", "btrfs", "openstack", "cinder", "awx", "events"]
# Pages about the development tree, which the built collection does not ship.
DEVELOPER_PAGES = {"performance": "the benchmark in bench/, which is not part of the built collection"}
UNDERLINES = {1: "=", 2: "-", 3: "~", 4: "^", 5: '"', 6: "'"}
LANGUAGES = {"": "text", "sh": "bash", "shell": "bash", "console": "console", "yml": "yaml"}


# ----------------------------------------------------------------------------- inline


def _escape(text: str) -> str:
    out = []
    for char in text:
        if char in "\\`*|_":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _inline(node: SyntaxTreeNode) -> str:
    parts: list[str] = []

    def add(markup: str, boundary: bool = False) -> None:
        if boundary and parts and parts[-1] and (parts[-1][-1].isalnum() or parts[-1][-1] in "\\_"):
            parts.append("\\ ")
        parts.append(markup)

    def close_boundary() -> None:
        parts.append("\0")  # marker: what follows must not be a word character

    for child in node.children:
        kind = child.type
        if kind == "text":
            text = _escape(child.content)
            if parts and parts[-1] == "\0":
                parts.pop()
                if text and text[0].isalnum():
                    text = "\\ " + text
            parts.append(text)
            continue
        if parts and parts[-1] == "\0":
            parts.pop()
        if kind == "code_inline":
            content = child.content
            if "``" in content or content != content.strip():
                add(":literal:`%s`" % content.replace("\\", "\\\\").replace("`", "\\`"), True)
            else:
                add("``%s``" % content, True)
            close_boundary()
        elif kind == "strong":
            add("**%s**" % _inline(child), True)
            close_boundary()
        elif kind == "em":
            add("*%s*" % _inline(child), True)
            close_boundary()
        elif kind == "link":
            href = child.attrs.get("href", "")
            text = _inline(child)
            if href.endswith(".md") and "/" not in href and "://" not in href:
                add(":ref:`%s <%s>`" % (text, LABEL % href[:-3]), True)
            else:
                add("`%s <%s>`__" % (text, href), True)
            close_boundary()
        elif kind == "softbreak":
            parts.append("\n")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "html_inline":
            parts.append(_escape(child.content))
        else:
            raise ValueError("unsupported inline element %s" % kind)
    if parts and parts[-1] == "\0":
        parts.pop()
    return "".join(parts)


# ----------------------------------------------------------------------------- blocks


def _indent(text: str, prefix: str) -> str:
    return "\n".join((prefix + line) if line.strip() else "" for line in text.split("\n"))


def _block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "heading":
        level = int(node.tag[1:])
        title = _inline(node.children[0]).replace("\n", " ")
        return "%s\n%s" % (title, UNDERLINES[level] * max(len(title), 3))
    if kind == "paragraph":
        return _inline(node.children[0])
    if kind in ("fence", "code_block"):
        language = (node.info or "").strip().split(" ")[0] if kind == "fence" else ""
        language = LANGUAGES.get(language, language)
        code = node.content.rstrip("\n")
        return ".. code-block:: %s\n\n%s" % (language, _indent(code, "    "))
    if kind in ("bullet_list", "ordered_list"):
        items = []
        start = int(node.attrs.get("start", 1)) if kind == "ordered_list" else 1
        for index, item in enumerate(node.children):
            marker = "- " if kind == "bullet_list" else "%d. " % (start + index)
            body = _blocks(item.children)
            items.append(marker + _indent(body, " " * len(marker))[len(marker):])
        return "\n\n".join(items)
    if kind == "blockquote":
        return _indent(_blocks(node.children), "    ")
    if kind == "hr":
        return "----"
    if kind == "table":
        return _table(node)
    if kind == "html_block":
        return ".. raw:: html\n\n" + _indent(node.content.rstrip("\n"), "    ")
    raise ValueError("unsupported block element %s" % kind)


def _blocks(children) -> str:
    return "\n\n".join(_block(child) for child in children)


def _table(node: SyntaxTreeNode) -> str:
    rows = []
    header_rows = 0
    for section in node.children:
        for row in section.children:
            cells = []
            for cell in row.children:
                text = _inline(cell.children[0]) if cell.children else ""
                cells.append(text.replace("\n", " ") or "\\ ")
            rows.append(cells)
            if section.type == "thead":
                header_rows += 1
    lines = [".. list-table::", "   :header-rows: %d" % header_rows, ""]
    for cells in rows:
        for index, cell in enumerate(cells):
            lines.append(("   * - " if index == 0 else "     - ") + cell)
    return "\n".join(lines)


def markdown_to_rst(text: str, page: str, source: str) -> str:
    parser = MarkdownIt("commonmark").enable("table")
    tree = SyntaxTreeNode(parser.parse(text))
    header = (".. Generated from %s by scripts/docsite.py: edit that file, then rerun the script.\n\n"
              ".. _%s:\n\n" % (source, LABEL % page))
    return header + _blocks(tree.children).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- playbooks


def _playbook_comment(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() == "---":
            continue
        if not line.startswith("#"):
            break
        lines.append(line[1:][1:] if line.startswith("# ") else line[1:])
    return lines


def _comment_to_rst(lines: list[str]) -> str:
    """Prose lines become paragraphs; indented lines (commands) become code blocks."""
    out: list[str] = []
    prose: list[str] = []
    code: list[str] = []

    def flush() -> None:
        if prose:
            out.append(_escape(" ".join(line.strip() for line in prose)))
            prose.clear()
        if code:
            # Commands are indented by two spaces in the comment; the code block keeps the rest.
            commands = "\n".join(line[2:] if line.startswith("  ") else line for line in code)
            out.append(".. code-block:: bash\n\n" + _indent(commands, "    "))
            code.clear()

    for line in lines:
        if line.startswith("  "):
            if prose:
                flush()
            code.append(line)
        else:
            if code:
                flush()
            prose.append(line)
    flush()
    return "\n\n".join(out)


def playbooks_rst() -> str:
    title = "Playbooks"
    parts = [
        ".. Generated from playbooks/*.yml by scripts/docsite.py: edit the playbooks' leading comments, "
        "then rerun the script.",
        ".. _%s:" % (LABEL % "playbooks"),
        "%s\n%s" % (title, "=" * len(title)),
        "The collection's playbooks run as ``ansible-playbook storage.mobility.<name>``. Each declares its "
        "backends once, through ``module_defaults`` on the action group ``group/storage.mobility.mobility``, "
        "from the inventory variable ``mobility_backends``.",
    ]
    for path in sorted((REPO_ROOT / "playbooks").glob("*.yml")):
        name = "storage.mobility.%s" % path.stem
        plays = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        parts.append("%s\n%s" % (name, "-" * len(name)))
        comment = _playbook_comment(path)
        if comment:
            parts.append(_comment_to_rst(comment))
        names = [play.get("name") for play in plays if isinstance(play, dict) and play.get("name")]
        if names:
            parts.append("Its plays, in order:\n\n" + "\n".join("- " + _escape(n) for n in names))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the docsite


class _IndentedDumper(yaml.SafeDumper):
    """Indents sequences inside mappings, as yamllint (ansible-lint) wants."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def _title(markdown: str, page: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip().replace("`", "")
    return page


def pages() -> list[str]:
    found = sorted(p.stem for p in DOCS.glob("*.md") if p.stem not in DEVELOPER_PAGES)
    return [p for p in ORDER if p in found] + [p for p in found if p not in ORDER]


def generate() -> dict[Path, str]:
    files: dict[Path, str] = {}
    toctree = []
    for page in pages():
        source = DOCS / (page + ".md")
        markdown = source.read_text(encoding="utf-8")
        files[RST / (page + ".rst")] = markdown_to_rst(markdown, page, "docs/%s.md" % page)
        toctree.append({"ref": page, "title": _title(markdown, page)})
    files[RST / "playbooks.rst"] = playbooks_rst()
    index = {
        "sections": [
            {"title": "Guides", "toctree": toctree},
            {"title": "Playbooks", "toctree": [{"ref": "playbooks", "title": "The phase playbooks and the demos"}]},
        ]
    }
    files[DOCSITE / "extra-docs.yml"] = (
        "---\n# Generated by scripts/docsite.py (the docsite pages antsibull-docs renders): rerun it, do not edit.\n"
        + yaml.dump(index, Dumper=_IndentedDumper, sort_keys=False, width=120))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    files = generate()
    stale = [path for path, content in files.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != content]
    extra = sorted(set(RST.glob("*.rst")) - set(files)) if RST.is_dir() else []
    if args.check:
        for path in stale:
            print("not up to date: %s" % path.relative_to(REPO_ROOT))
        for path in extra:
            print("not generated from any page: %s" % path.relative_to(REPO_ROOT))
        if stale or extra:
            print("run: python scripts/docsite.py")
            return 1
        return 0
    RST.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(files[path], encoding="utf-8")
        print("wrote %s" % path.relative_to(REPO_ROOT))
    for path in extra:
        path.unlink()
        print("removed %s" % path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
