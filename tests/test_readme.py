"""README.rst is the user's manual: it must parse cleanly and keep its first two commands."""

from __future__ import annotations

import docutils.core
import docutils.utils

from tests.helpers import ROOT


def test_readme_renders_without_warnings():
    text = (ROOT / "README.rst").read_text()
    docutils.core.publish_doctree(
        text, settings_overrides={"halt_level": docutils.utils.Reporter.WARNING_LEVEL,
                                  "report_level": docutils.utils.Reporter.WARNING_LEVEL})


def test_readme_starts_with_demo_and_test():
    head = (ROOT / "README.rst").read_text().split("\n\n", 3)[:3]
    assert "scripts/demo" in "\n".join(head) and "scripts/test" in "\n".join(head)
