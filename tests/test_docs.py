"""The README documents every setting and every command (a promise of the project's guide)."""

from __future__ import annotations

from pathlib import Path

from twinserve.cli import build_parser
from gateway.settings import GatewaySettings
from twinserve.settings import StackSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [f"TWINSERVE_{n.upper()}" for n in StackSettings.model_fields if f"`TWINSERVE_{n.upper()}`" not in README]
    missing += [f"TWINSERVE_GATEWAY_{n.upper()}" for n in GatewaySettings.model_fields if f"`TWINSERVE_GATEWAY_{n.upper()}`" not in README]
    assert not missing, missing


def test_every_subcommand_is_in_the_readme() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in sub.choices if f"twinserve {name}" not in README]
    assert not missing, missing


def test_readme_starts_with_the_two_commands() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make demo", "make test"]
