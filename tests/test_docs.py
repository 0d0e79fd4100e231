"""docs/ builds with Sphinx, warnings as errors (as on Read the Docs), and the console page
documents every `ccs` command and option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from ccs.console.main import cli
from tests.helpers import ROOT

DOCS = ROOT / "docs"


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "html" / "providers" / "fcm.html").is_file()
    assert (tmp_path / "html" / "settings.html").is_file()


def _commands(cmd: click.Command, path: tuple[str, ...]):
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def _documented(opt: click.Option, text: str) -> bool:
    spellings = [*opt.opts, *opt.secondary_opts]
    spellings += [f"--[no-]{s[2:]}" for s in opt.opts if s.startswith("--")]
    return any(s in text for s in spellings)


def test_console_page_documents_every_command_and_option() -> None:
    text = (DOCS / "console.rst").read_text()
    missing = []
    for name, cmd in _commands(cli, ("ccs",)):
        if name not in text:
            missing.append(name)
        missing += [f"{name} {p.opts[0]}" for p in cmd.params
                    if isinstance(p, click.Option) and not _documented(p, text)]
    assert not missing, f"not in docs/console.rst: {missing}"
