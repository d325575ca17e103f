"""The ``kvsched`` command line: `app` (the commands and their registration), `common` (shared
options, spec parsing, errors, output) and one module per command group."""

from .app import app, main

__all__ = ["app", "main"]
