"""The documentation holds together: every relative link and ``#anchor`` in README.md and docs/*.md
resolves, every docs page is linked from the README, and the README stays short.

Anchors follow GitHub's heading slugs: the heading's text (code spans keep their text without the
backticks, links keep their text), lowercased, every character that is not a letter, digit,
underscore, hyphen or space removed, spaces turned into hyphens; a repeated slug gets -1, -2, ...
Links to http(s) and mailto are not checked (no network here). Pure Python, no imports of the package.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200
SKIPPED_SCHEMES = ("http://", "https://", "mailto:")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
INLINE_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
HTML_TAG = re.compile(r"<[^>]+>")
NOT_SLUG = re.compile(r"[^\w\- ]")


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None:
            if (
                match
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not line.strip()[len(match.group(1)) :].strip()
            ):
                fence = None
        else:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before numbering repeats)."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), heading)
    text = INLINE_LINK_TEXT.sub(r"\1", text)
    text = HTML_TAG.sub("", text)
    return NOT_SLUG.sub("", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link into ``path`` may name: its headings' slugs (repeats numbered) and HTML anchors."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        base = result = slug(match.group(1) or "")
        while result in counts:  # github-slugger: "x", then "x-1", "x-2", ...
            counts[base] += 1
            result = f"{base}-{counts[base]}"
        counts[result] = 0
        found.add(result)
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code blocks and code spans."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            found.append((number, match.group(1)))
    return found


def resolve(path: Path, target: str) -> tuple[Path, str]:
    """The file a relative link points at, and its anchor ('' for none)."""
    file_part, _, fragment = target.partition("#")
    destination = (path.parent / unquote(file_part)).resolve() if file_part else path.resolve()
    return destination, unquote(fragment)


def broken_links(path: Path) -> list[str]:
    """One message per relative link of ``path`` whose file or anchor does not exist."""
    problems = []
    for number, target in links(path):
        where = f"{path.name}:{number}: {target or '(empty link)'}"
        if target.startswith(SKIPPED_SCHEMES):
            continue
        if not target:
            problems.append(where)
            continue
        destination, fragment = resolve(path, target)
        if not destination.exists():
            problems.append(f"{where}: {destination} does not exist")
        elif fragment and (destination.is_dir() or destination.suffix != ".md"):
            problems.append(f"{where}: an anchor into {destination.name}, which is not a Markdown file")
        elif fragment and fragment not in anchors(destination):
            problems.append(f"{where}: no heading in {destination.name} has the anchor #{fragment}")
    return problems


def unlinked_pages(readme: Path, pages: list[Path]) -> list[str]:
    """The pages that no link of ``readme`` points at."""
    linked = {resolve(readme, target)[0] for _, target in links(readme) if not target.startswith(SKIPPED_SCHEMES)}
    return [page.name for page in pages if page.resolve() not in linked]


# --- the checker itself: it must find what is wrong, or the tests below would pass on anything ---


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Sweeps, cross-validation and scaling out", "sweeps-cross-validation-and-scaling-out"),
        ("Our recipes: `speedrun`, `best_small`, `best`", "our-recipes-speedrun-best_small-best"),
        ("Ship a model: ONNX and TorchScript export", "ship-a-model-onnx-and-torchscript-export"),
        ("A/B test (v2.0) -- **now**!", "ab-test-v20----now"),
        ("See [the guide](guide.md) first", "see-the-guide-first"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Usage\n\n## Usage\n\n```\n# Usage (a comment in code, not a heading)\n```\n\n### Usage ##\n")
    assert anchors(page) == {"usage", "usage-1", "usage-2"}


def test_checker_reports_every_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## Real heading\n\nBack to [the README](../README.md#intro).\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Intro\n\n"
        "Good: [page](docs/page.md), [section](docs/page.md#real-heading), [here](#intro), [folder](docs/),\n"
        "[web](https://example.com/nowhere), [mail](mailto:someone@example.com).\n"
        "Ignored: `[in a code span](missing-in-span.md)`.\n"
        "```bash\n[in a fence](missing-in-fence.md)\n```\n"
        "Broken: [file](docs/missing.md), [anchor](docs/page.md#no-such-heading), [local](#nowhere),\n"
        "![image](img/missing.png), [anchor into a folder](docs/#x).\n"
    )
    problems = broken_links(readme)
    reported = sorted(p.split(": ")[1] for p in problems)
    assert reported == sorted(
        ["docs/missing.md", "docs/page.md#no-such-heading", "#nowhere", "img/missing.png", "docs/#x"]
    ), problems
    assert broken_links(tmp_path / "docs" / "page.md") == []
    assert unlinked_pages(readme, [tmp_path / "docs" / "page.md", tmp_path / "docs" / "orphan.md"]) == ["orphan.md"]


# --- the real documentation ---


def test_docs_folder_has_pages() -> None:
    assert README.is_file()
    assert doc_pages(), "docs/ holds no *.md pages"


@pytest.mark.parametrize("path", [README, *doc_pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    assert unlinked_pages(README, doc_pages()) == []


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"
