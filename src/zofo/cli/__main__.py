"""`python -m zofo.cli ...` is the `zofo` command."""

import sys

from zofo.cli.main import entry

sys.exit(entry())
