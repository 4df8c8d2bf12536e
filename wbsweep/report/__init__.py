"""``wbsweep report``: one self-contained HTML page of a sweep, and its plots as PNG images.

Read through the backend contract (:mod:`.data`), drawn as inline SVG
(:mod:`.svg`, :mod:`.page`) and, on request, as PNG with matplotlib
(:mod:`.png`). Files are written whole or not at all: each goes to a temporary
file beside its target first, and every target is checked before any is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wbsweep.backends.base import Backend
from wbsweep.errors import UsageError
from wbsweep.report.data import SweepReport, collect
from wbsweep.report.page import IMPORTANCE_METHOD, render_html

__all__ = ["IMPORTANCE_METHOD", "Written", "SweepReport", "collect", "render_html", "write_report"]


@dataclass(frozen=True)
class Written:
    """What ``write_report`` wrote, and what the page could show."""

    html: Path
    pngs: tuple[Path, ...]
    runs: int
    scored: int


def write_report(
    backend: Backend, sweep_id: str, output: str | Path, png_dir: str | Path | None = None
) -> Written:
    """Write the sweep's report to ``output`` (and its plots under ``png_dir``).

    Raises:
        SweepNotFoundError: No such sweep.
        UsageError: ``output`` or ``png_dir`` cannot be written.
    """
    html_path = Path(output)
    _checked(html_path, _check_file_target, "-o")
    png_path = Path(png_dir) if png_dir is not None else None
    if png_path is not None:
        _checked(png_path, _check_dir_target, "--png")
    report = collect(backend, sweep_id)
    page = render_html(report)
    written = []
    if png_path is not None:
        from wbsweep.report.png import render_pngs

        images = render_pngs(report)
        png_path.mkdir(exist_ok=True)
        written = [_write_atomic(png_path / name, content) for name, content in images.items()]
    _write_atomic(html_path, page.encode("utf-8"))
    return Written(html_path, tuple(written), len(report.runs), len(report.scored))


def _checked(path: Path, check: Callable[[Path], None], flag: str) -> None:
    """Run ``check``; an OS error on the way (a name too long) is a one-line error too."""
    try:
        check(path)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(f"cannot write {flag} {str(path)!r}: {reason}") from None


def _check_file_target(path: Path, flag: str = "-o") -> None:
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {flag} {str(path)!r}: no directory {str(parent)!r}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {flag} {str(path)!r}: permission denied")
    _probe(parent, path, flag)


def _check_dir_target(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--png {str(path)!r} is a file, not a directory")
    where = path if path.is_dir() else path.parent
    if not where.is_dir():
        raise UsageError(f"cannot write --png {str(path)!r}: no directory {str(where)!r}")
    _probe(where, path, "--png")


def _probe(directory: Path, path: Path, flag: str) -> None:
    """Fail now, before any work, where a file cannot be made in ``directory``."""
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}."[:200], suffix=".tmp")
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(f"cannot write {flag} {str(path)!r}: {reason}") from None
    os.close(fd)
    os.unlink(temp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` whole: a temporary file beside it, then renamed."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}."[:200], suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(temp, 0o666 & ~_umask())  # as an ordinary open() would have made it
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return path
