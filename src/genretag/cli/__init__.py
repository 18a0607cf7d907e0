"""The `genretag` command line: thin commands that parse options and call the subpackages.

Imports: any genretag subpackage; nothing imports genretag.cli."""
