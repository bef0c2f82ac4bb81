"""Subcommands beyond export; filled in as the services, gateway and load tests land."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    return None
