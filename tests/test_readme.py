"""README.rst is the way in: short, parses cleanly and keeps its two commands at the top.
Every page under docs/ parses cleanly too, with no page left out of the table of contents."""

from __future__ import annotations

import docutils.core
import docutils.utils
import pytest

from tests.helpers import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.rst"))


def test_readme_renders_without_warnings():
    text = (ROOT / "README.rst").read_text()
    docutils.core.publish_doctree(
        text, settings_overrides={"halt_level": docutils.utils.Reporter.WARNING_LEVEL,
                                  "report_level": docutils.utils.Reporter.WARNING_LEVEL})


def test_readme_starts_with_demo_and_test():
    head = (ROOT / "README.rst").read_text().split("\n\n", 3)[:3]
    assert "scripts/demo" in "\n".join(head) and "scripts/test" in "\n".join(head)


def test_readme_is_short_and_leads_into_the_docs():
    text = (ROOT / "README.rst").read_text()
    assert len(text.splitlines()) < 200
    assert "docs/" in text and ".. settings-table-start" not in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_docs_page_is_in_the_toctree(page):
    """Sphinx warns about orphans too; this names the page without a build."""
    if page.name == "index.rst" and page.parent == DOCS:
        return
    index = (DOCS / "index.rst").read_text()
    assert str(page.relative_to(DOCS).with_suffix("")) in index.split()
