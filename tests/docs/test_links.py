"""The documentation's links resolve, and the README stays a page a newcomer reads.

Every relative link of README.md, SECURITY.md, bench/README.md and docs/*.md must name a file or directory
of the repository, and its `#anchor` a heading of the target, slugged as GitHub does; external links are
not fetched (CI has no network) but must be well-formed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 160

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_HOST = re.compile(r"^(localhost|\d{1,3}(\.\d{1,3}){3}|([a-z0-9-]+\.)+[a-z]{2,})$", re.IGNORECASE)
# GitHub keeps letters, digits, `-` and `_` (and spaces, which become `-`): the rest is punctuation.
_NOT_SLUG = re.compile(r"[^\w\- ]", re.UNICODE)
_LINE_ANCHOR = re.compile(r"^L\d+(-L\d+)?$")


def doc_files() -> list[Path]:
    """The pages whose links are checked: the README, SECURITY.md, bench/README.md and every docs page."""
    fixed = [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "bench" / "README.md"]
    return fixed + sorted((ROOT / "docs").rglob("*.md"))


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, where a `#` or `[x](y)` is Markdown, not code."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before the -1, -2 of duplicates)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    return _NOT_SLUG.sub("", text.strip().lower()).replace(" ", "-")


def heading_anchors(text: str) -> set[str]:
    """Every anchor of a Markdown text's headings, duplicates numbered as GitHub numbers them."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def link_targets(text: str) -> list[str]:
    """The targets of inline links and images, reference definitions and autolinks, outside code."""
    targets: list[str] = []
    for line in _prose_lines(text):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
            continue
        prose = _CODE_SPAN.sub("", line)
        targets += _INLINE_LINK.findall(prose)
        targets += _AUTOLINK.findall(prose)
    return targets


def _external_error(target: str) -> str | None:
    parts = urlsplit(target)
    if parts.scheme == "mailto":
        return (
            None if re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", parts.path, re.IGNORECASE) else "bad address"
        )
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is neither http(s) nor mailto"
    if not parts.hostname or not _HOST.match(parts.hostname):
        return "not a well-formed URL"
    return None


def _local_error(source: Path, target: str) -> str | None:
    path_part, _, anchor = target.partition("#")
    if path_part.startswith("/"):
        return "absolute path: link relative to the page"
    resolved = (source.parent / unquote(path_part)).resolve() if path_part else source
    if not resolved.exists():
        return f"no such file: {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}"
    if not anchor:
        return None
    if resolved.suffix != ".md":
        return None if _LINE_ANCHOR.match(anchor) else f"#{anchor} on a file that has no headings"
    if unquote(anchor) not in heading_anchors(resolved.read_text(encoding="utf-8")):
        return f"no heading #{anchor} in {resolved.name}"
    return None


def broken_links(source: Path) -> list[str]:
    """`target: why` for each link of `source` that does not resolve; empty when all do."""
    problems = []
    for target in link_targets(source.read_text(encoding="utf-8")):
        if not target:
            error: str | None = "empty link"
        elif re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            error = _external_error(target)
        else:
            error = _local_error(source, target)
        if error:
            problems.append(f"{target}: {error}")
    return problems


@pytest.mark.parametrize("page", doc_files(), ids=lambda page: str(page.relative_to(ROOT)))
def test_it_resolves_every_link_of_the_page(page: Path) -> None:
    assert broken_links(page) == []


def test_it_checks_the_docs_pages_and_the_index_lists_each() -> None:
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md") if path.name != "index.md")
    assert pages, "docs/ holds no page"
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert [page for page in pages if f"]({page})" not in index] == []


def test_it_keeps_the_readme_short_and_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make run" in readme
    assert "make test" in readme


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Quick start", "quick-start"),
        ("`repository_latency.py`", "repository_latencypy"),
        ("BigQuery's limits in tests: the realism proxy", "bigquerys-limits-in-tests-the-realism-proxy"),
        ("Figures: the path before issue 12", "figures-the-path-before-issue-12"),
        ("Tenants, keys and credentials", "tenants-keys-and-credentials"),
        ("A [linked](x.md) heading", "a-linked-heading"),
    ],
)
def test_it_slugs_headings_as_github_does(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


_TARGET_PAGE = "# Target\n\n## Figures\n\n## Figures\n\n```sh\n# not a heading\n```\n"


@pytest.mark.parametrize(
    ("link", "broken"),
    [
        ("[ok](target.md)", False),
        ("[ok](target.md#figures)", False),
        ("[second of two](target.md#figures-1)", False),
        ("[a directory](sub)", False),
        ("[here](#a-heading-here)", False),
        ("[web](https://cloud.google.com/bigquery/docs/x)", False),
        ("[mail](mailto:security@convergence.example)", False),
        ("`[in code](missing.md)`", False),
        ("```\n[in a fence](missing.md)\n```", False),
        ("[gone](missing.md)", True),
        ("[gone anchor](target.md#tables)", True),
        ("[third of two](target.md#figures-2)", True),
        ("[code is no heading](target.md#not-a-heading)", True),
        ("[own page](#nowhere)", True),
        ("[absolute](/docs/api.md)", True),
        ("[bad url](https://)", True),
        ("[no such host](https://example/x)", True),
        ("[other scheme](ftp://example.com/file)", True),
        ("[empty]()", True),
        ("[ref]: missing.md", True),
    ],
)
def test_it_reports_only_broken_links(tmp_path: Path, link: str, broken: bool) -> None:
    (tmp_path / "target.md").write_text(_TARGET_PAGE, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\n## A heading here\n\n{link}\n", encoding="utf-8")
    assert bool(broken_links(page)) is broken
