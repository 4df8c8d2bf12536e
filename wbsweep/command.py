"""Turning a sweep's ``command`` into the argv of one trial.

The macros are the ones ``wandb agent`` expands, with the same meaning, so a
command written for W&B runs unchanged on the local backend.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any

MACROS = (
    "env",
    "interpreter",
    "program",
    "args",
    "args_no_hyphens",
    "args_no_boolean_flags",
    "args_json",
    "args_json_file",
)
_ENVVAR = re.compile(r"\$\{envvar:([A-Za-z0-9_]*)\}")


def expand_command(
    command: list[str],
    params: Mapping[str, Any],
    *,
    program: str | None,
    args_json_file: str,
    env: Mapping[str, str],
    interpreter: str = sys.executable,
) -> list[str]:
    """The argv for one run: each macro token becomes zero or more tokens.

    ``${envvar:NAME}`` is replaced inside any token by ``env[NAME]`` (left as
    ``NAME`` when unset, as ``wandb agent`` does).

    >>> expand_command(["${interpreter}", "train.py", "${args}"], {"lr": 0.1},
    ...                program=None, args_json_file="p.json", env={}, interpreter="python")
    ['python', 'train.py', '--lr=0.1']
    """
    values = _macro_values(params, program, args_json_file, interpreter)
    argv: list[str] = []
    for token in command:
        token = _ENVVAR.sub(lambda m: env.get(m.group(1), m.group(1)), str(token))
        if token.startswith("${") and token.endswith("}") and token[2:-1] in values:
            argv.extend(values[token[2:-1]])
        else:
            argv.append(token)
    return argv


def _macro_values(
    params: Mapping[str, Any], program: str | None, args_json_file: str, interpreter: str
) -> dict[str, list[str]]:
    pairs = [f"{name}={value}" for name, value in params.items()]
    no_booleans = [
        f"--{name}" if isinstance(value, bool) else f"--{name}={value}"
        for name, value in params.items()
        if value is not False
    ]
    return {
        "env": ["/usr/bin/env"] if sys.platform != "win32" else [],
        "interpreter": [interpreter],
        "program": [program] if program else [],
        "args": [f"--{pair}" for pair in pairs],
        "args_no_hyphens": pairs,
        "args_no_boolean_flags": no_booleans,
        "args_json": [json.dumps(dict(params))],
        "args_json_file": [args_json_file],
    }
