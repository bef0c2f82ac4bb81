"""One rich console for every command; wide when output is not a terminal, so tables stay readable in logs."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 150)
