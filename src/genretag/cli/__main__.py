"""`python -m genretag.cli`: the genretag command line."""

from genretag.cli.app import main

main()
