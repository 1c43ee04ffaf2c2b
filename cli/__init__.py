"""The `qloop` command line, one module per command group (starter.py builds the parser)."""
