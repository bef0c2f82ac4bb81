"""The README documents every setting and every command (a promise of the project's guide)."""

from __future__ import annotations

import re
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


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("twinserve", "loadtests", "gateway", "services", "models", "tools")  # tools/: scripts for developers
NAME = re.compile(r"(?<![A-Za-z0-9_])TWINSERVE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_{])")


def layout_block() -> str:
    section = README.split("## What is inside", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def test_the_layout_section_lists_every_file_and_only_files_that_exist() -> None:
    block = layout_block()
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix not in (".py", ".sh") or path.name == "__init__.py" or "__pycache__" in path.parts:
                continue
            parent = path.parent.relative_to(ROOT).parts
            listed = path.name in block or (len(parent) > 1 and f"{parent[-1]}/" in block)
            if not listed:
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"files the README's 'What is inside' does not mention: {missing}"
    named = set(re.findall(r"[\w-]+\.(?:py|sh)\b", block))
    existing = {p.name for package in PACKAGES for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".sh")}
    assert not named - existing, f"the layout names files that do not exist: {sorted(named - existing)}"


def test_every_twinserve_variable_the_code_reads_is_documented_and_vice_versa() -> None:
    fields = {f"TWINSERVE_{n.upper()}" for n in StackSettings.model_fields} | {f"TWINSERVE_GATEWAY_{n.upper()}" for n in GatewaySettings.model_fields}
    sources = [p for package in PACKAGES for p in (ROOT / package).rglob("*") if p.suffix in (".py", ".sh", ".yml", ".properties", ".config") and "__pycache__" not in p.parts]
    sources += [ROOT / "Makefile", ROOT / "docker-compose.yml"]
    in_code = {name for p in sources for name in NAME.findall(p.read_text())}
    documented = set(NAME.findall(README))
    undocumented = sorted((fields | in_code) - {n for n in documented if f"`{n}`" in README})
    assert not undocumented, f"read by the code but not documented (in backticks) in the README: {undocumented}"
    unknown = sorted(documented - fields - in_code)
    assert not unknown, f"documented in the README but read by nothing: {unknown}"
