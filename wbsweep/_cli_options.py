"""Options more than one command takes."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["count_option", "store_option"]

store_option = click.option(
    "--store",
    type=click.Path(dir_okay=False),
    default=None,
    help="Local store file [default: $WBSWEEP_STORE or .wbsweep/store.db].",
)


def count_option(name: str, low: int, default: int, text: str) -> Any:
    return click.option(
        name, type=click.IntRange(min=low), default=default, show_default=True, help=text
    )
