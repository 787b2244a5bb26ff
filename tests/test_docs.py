"""The README and docs/: short where they must be, every relative link resolving, no development machine in them,
and the probe's verdicts and exit codes as the code has them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from healthcheck.probe.verdict import Verdict
from healthcheck.status import Status

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        assert destination.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(destination), f"{page.name}: {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_development_machine_paths_or_commit_hashes(page: Path) -> None:
    text = page.read_text()

    assert not re.findall(r"/work/|/root/|\.pyenv|/home/\w+/", text)
    assert not re.findall(r"\b[0-9a-f]{40}\b", text)


def test_the_probes_exit_status_table_is_the_codes() -> None:
    """Each state's row lists exactly the verdicts the code gives that state, in the code's order."""
    text = (REPO / "docs" / "probe.md").read_text()

    for status in Status:
        row = re.search(rf"^\| {status.name} \({status.value}\) \| (.*) \|$", text, re.MULTILINE)
        assert row is not None, f"no row for {status.name}"
        listed = re.findall(r"`([A-Z_]+)`", row.group(1))
        assert listed == [verdict.value for verdict in Verdict if verdict.status is status]


def test_every_verdict_is_explained_in_the_probes_page() -> None:
    text = (REPO / "docs" / "probe.md").read_text()

    for verdict in Verdict:
        assert f"`{verdict.value}`" in text
