from ccs.console.main import cli

cli()
