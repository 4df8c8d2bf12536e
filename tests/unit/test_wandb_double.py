"""The W&B test double answers the real, unmodified wandb SDK as a W&B server would.

The fast half: the double's GraphQL executor and HTTP answers, and the real SDK
in this process. The half that starts ``wandb`` CLI and ``wandb agent``
processes is ``tests/e2e/test_wandb_agent.py``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import wandb
from helpers import ENTITY, PROJECT, sweep_config
from wandb_double import GraphQLError, WandbDouble, reset_wandb
from wandb_double._graphql import execute, parse


def post(double: WandbDouble, path: str, body: Any, key: str | None = None) -> tuple[int, Any]:
    """A raw request, as wandb-core would send it (HTTP basic auth ``api:<key>``)."""
    import base64

    request = urllib.request.Request(
        double.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic "
            + base64.b64encode(f"api:{key or double.api_key}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


# ------------------------------------------------------------------ fast: no SDK process


def test_graphql_executor_follows_the_selection_set() -> None:
    doc = parse(
        """
        query Q($n: String!, $first: Int = 2) {
          project(name: $n) { ...P  renamed: name  runs(first: $first) { count } }
        }
        fragment P on Project { __typename id  ... on Project { name } }
        """
    )
    root = {
        "project": lambda a: {
            "__typename": "Project",
            "id": "1",
            "name": a["name"],
            "runs": lambda b: {"count": b["first"]},
            "extra": 1,
        }
    }
    data, missing = execute(doc, "Q", {"n": "p"}, {"query": root})
    assert data == {
        "project": {
            "__typename": "Project",
            "id": "1",
            "name": "p",
            "renamed": "p",
            "runs": {"count": 2},
        }
    }
    assert missing == []
    with pytest.raises(GraphQLError, match="cannot answer query Q2: no query field 'nope'"):
        execute(parse("query Q2 { nope }"), None, {}, {"query": root})


def test_unknown_operation_is_named_and_logged(wandb_double: WandbDouble) -> None:
    status, answer = post(wandb_double, "/graphql", {"query": "query Mystery { mystery { id } }"})
    assert status == 200
    assert "Mystery" in answer["errors"][0]["message"]
    assert any("Mystery" in u for u in wandb_double.unknown)
    assert wandb_double.operations()[-1] == "Mystery"


def test_heartbeat_for_unknown_agent_is_http_404(wandb_double: WandbDouble) -> None:
    """wandb agent reads HTTP 404 on Heartbeat as "sweep deleted"."""
    query = "mutation Heartbeat($id: ID!) { agentHeartbeat(input: {id: $id}) { commands } }"
    status, _ = post(wandb_double, "/graphql", {"query": query, "variables": {"id": "nope"}})
    assert status == 404


def test_require_key_rejects_other_keys_with_401() -> None:
    with WandbDouble(require_key="k" * 40) as double:
        assert double.api_key == "k" * 40
        status, answer = post(double, "/graphql", {"query": "{ viewer { id } }"}, key="x" * 40)
        assert status == 401
        assert answer["errors"][0]["message"] == "user is not logged in"
        status, answer = post(double, "/graphql", {"query": "{ viewer { entity } }"})
        assert (status, answer) == (200, {"data": {"viewer": {"entity": "test-entity"}}})


# ------------------------------------------------------------------ real SDK, in process


def test_bad_key_fails_like_w_and_b(monkeypatch: pytest.MonkeyPatch) -> None:
    with WandbDouble(require_key="k" * 40) as double:
        for key, value in double.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
        reset_wandb()
        try:
            with pytest.raises(wandb.errors.AuthenticationError) as raised:
                wandb.sweep(sweep_config([1]), project=PROJECT)
            assert str(raised.value) == (
                f"Failed to verify credentials with {double.base_url}: user is not logged in"
            )
            with pytest.raises(wandb.errors.AuthenticationError):
                wandb.Api().runs(f"{ENTITY}/{PROJECT}")
        finally:
            reset_wandb()
        assert double.sweeps() == []
        assert double.api_keys_seen == {"b" * 40}


# ------------------------------------------------------------------ real wandb agent process
