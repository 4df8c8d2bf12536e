"""The README's reference tables say what the code does, so they cannot drift.

Every command and every flag of ``wbsweep`` is in the commands table (and no
flag there is made up), every variable in the environment table is read by
wbsweep or its scripts, every ``WBSWEEP_*`` variable the code reads is named in
the README or docs/INTERNALS.md, the exit codes match ``wbsweep/errors.py``, and
every test the README or docs/ name as proof exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from wbsweep import errors
from wbsweep.cli import main

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
INTERNALS = (REPO / "docs" / "INTERNALS.md").read_text()


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else len(README)]


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of the Markdown tables in ``text``."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows[1:] if rows else rows


def documented_flags() -> dict[str, set[str]]:
    """Command name -> the ``--flags`` (and ``-x``) its rows of the commands table list.

    A row whose first cell names a command starts it; consecutive command rows
    (``pause``, ``resume``, ...) share the flag rows that follow them.
    """
    flags: dict[str, set[str]] = {}
    current: list[str] = []
    previous_named = False
    for first, second, *_ in table_rows(section("Commands")):
        named = re.match(r"`wbsweep(?: (\w+))?", first)
        if named:
            name = named.group(1) or ""
            current = [*current, name] if previous_named else [name]
            flags.setdefault(name, set())
        previous_named = bool(named)
        for name in current:
            flags[name] |= set(re.findall(r"`(-{1,2}[a-z][a-z-]*)", second))
    return flags


def cli_flags(command: click.Command) -> set[str]:
    """Every option spelling of ``command`` but ``--help``."""
    found: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            found |= set(param.opts) | set(param.secondary_opts)
    return found - {"--help"}


def test_every_command_and_every_flag_is_in_the_commands_table() -> None:
    documented = documented_flags()
    assert set(main.commands) <= set(documented), set(main.commands) - set(documented)
    for name, command in [("", main), *main.commands.items()]:
        missing = cli_flags(command) - documented[name]
        invented = documented[name] - cli_flags(command)
        assert not missing, f"wbsweep {name}: not in the README's table: {sorted(missing)}"
        assert not invented, f"wbsweep {name}: no such flag: {sorted(invented)}"


def test_every_variable_in_the_table_is_read_by_wbsweep_or_its_scripts() -> None:
    sources = "".join(
        path.read_text()
        for top in ("wbsweep", "scripts")
        for path in (REPO / top).rglob("*")
        if path.suffix in (".py", ".sh")
    )
    names = {
        n
        for row in table_rows(section("Environment variables"))
        for n in re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0])
    }
    assert "WBSWEEP_STORE" in names
    unread = sorted(n for n in names if n not in sources)
    assert not unread, f"in the README's table but read nowhere: {unread}"


def test_every_wbsweep_variable_the_code_reads_is_documented() -> None:
    code = "".join(path.read_text() for path in (REPO / "wbsweep").rglob("*.py"))
    names = set(re.findall(r"\"(WBSWEEP_[A-Z0-9_]+)\"", code))
    undocumented = sorted(n for n in names if f"`{n}`" not in README + INTERNALS)
    assert not undocumented, f"neither in the README nor docs/INTERNALS.md: {undocumented}"


def test_the_exit_code_table_matches_errors_py() -> None:
    table = {row[1].strip("`"): int(row[0]) for row in table_rows(section("Exit codes"))}
    constants = {name: getattr(errors, name) for name in dir(errors) if name.startswith("EXIT_")}
    assert table == constants


def test_every_test_the_docs_name_exists() -> None:
    """A ``tests/....py::name`` in the README or docs/ names a test file and function that exist.

    docs/RELIABILITY.md says which test proves each guarantee; a merged or
    renamed test must take its references along.
    """
    import ast

    texts = [README] + [path.read_text() for path in sorted((REPO / "docs").glob("*.md"))]
    missing = []
    for text in texts:
        for path, name in set(re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text)):
            if not (REPO / path).is_file():
                missing.append(path)
                continue
            if name:
                tree = ast.parse((REPO / path).read_text())
                defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
                if name not in defined:
                    missing.append(f"{path}::{name}")
    assert sorted(missing) == []
