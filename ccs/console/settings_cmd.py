"""`ccs settings`: show the resolved settings (secrets masked) and where each came from."""

from __future__ import annotations

import json

import click

from ccs.console.common import config_option, load_settings


@click.command("settings")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def settings_cmd(config: str | None, as_json: bool) -> None:
    """Check the settings and print them; exits 2 naming the first bad one."""
    settings = load_settings(config)
    shown = settings.redacted()
    if as_json:
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    for key, value in shown.items():
        click.echo(f"{key} = {value!r}  [{settings.source(key)}]")
