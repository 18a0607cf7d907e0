"""The `genretag` command line: thin commands that parse options and call the subpackages.

:mod:`genretag.cli.app` holds the Typer app, the global options and the error reporting; each
command group is a module that declares its commands on that app (pipeline, registry, catalog,
predict, operations, similar). Importing this package imports them all, so ``genretag.cli.app.app`` is
always complete.

Imports: any genretag subpackage; nothing imports genretag.cli."""

from genretag.cli import app, catalog, operations, pipeline, predict, registry, similar  # noqa: F401 - each declares its commands on app.app
