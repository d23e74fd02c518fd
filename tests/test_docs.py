"""Every link of README.md, ARCHITECTURE.md and docs/*.md resolves: relative links to files that exist, and
``#anchors`` to headings of the file they point into (GitHub's anchors); every picture exists; the README
stays a front door (at most about 150 lines) and shows the pictures ``make screenshots`` writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.reference import slug
from scripts.screenshots import PICTURES

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (where a link is only an example)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1).replace("`", ""))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def test_the_pages_exist() -> None:
    names = {p.name for p in PAGES}
    wanted = {"results.md", "speed.md", "scale-out.md", "curation.md", "reference.md", "usage.md", "metrics.md"}
    assert wanted <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n## Errors and `--json`\n\n[a](#title) [b](#errors-and---json) [c](#nope)\n")
    assert links(page) == ["#title", "#errors-and---json", "#nope"]
    assert anchors(page) == {"title", "errors-and---json"}


def test_the_readme_is_a_front_door_with_the_pictures() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    for name in PICTURES:
        picture = ROOT / "docs" / "images" / name
        assert picture.is_file() and picture.read_text(encoding="utf-8").lstrip().startswith("<svg"), name
        assert f"](docs/images/{name})" in readme, name
    assert "make run" in readme and "make test" in readme and "run --default" in readme
