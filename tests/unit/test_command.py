from __future__ import annotations

import json

from wbsweep.command import expand_command

PARAMS = {"lr": 0.01, "layers": 2, "fp16": False, "warm": True, "opt": "adam"}


def expand(command: list[str], env: dict[str, str] | None = None) -> list[str]:
    return expand_command(
        command,
        PARAMS,
        program="train.py",
        args_json_file="/tmp/p.json",
        env=env or {},
        interpreter="/venv/bin/python",
    )


def test_default_wandb_command_expands_like_wandb_agent() -> None:
    argv = expand(["${env}", "${interpreter}", "${program}", "${args}"])
    assert argv == [
        "/usr/bin/env",
        "/venv/bin/python",
        "train.py",
        "--lr=0.01",
        "--layers=2",
        "--fp16=False",
        "--warm=True",
        "--opt=adam",
    ]


def test_every_args_macro() -> None:
    assert expand(["${args_no_hyphens}"])[:2] == ["lr=0.01", "layers=2"]
    assert expand(["${args_no_boolean_flags}"]) == [
        "--lr=0.01",
        "--layers=2",
        "--warm",
        "--opt=adam",
    ]
    (blob,) = expand(["${args_json}"])
    assert json.loads(blob) == PARAMS
    assert expand(["x", "${args_json_file}"]) == ["x", "/tmp/p.json"]


def test_envvar_macro_inside_a_token_and_unset_left_as_name() -> None:
    argv = expand(["--config_file", "${envvar:CFG}", "a-${envvar:MISSING}-b"], {"CFG": "/c.yaml"})
    assert argv == ["--config_file", "/c.yaml", "a-MISSING-b"]


def test_plain_tokens_and_unknown_macros_stay_single_tokens() -> None:
    argv = expand(["accelerate", "launch", "a b", "${nope}"])
    assert argv == ["accelerate", "launch", "a b", "${nope}"]
