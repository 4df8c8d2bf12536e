"""What tests in every tier share.

The ``wbsweep`` command line, run as the real console script (a subprocess, for
end-to-end tests) or in this process through click's ``CliRunner`` (for the
unit tier); looking for stray processes; waiting; and the plain sweep the W&B
double's own tests run. Test modules never import each other: what two of them
need lives here.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
TEST_SWEEPS = REPO / "tests" / "sweeps"
WBSWEEP = str(Path(sys.executable).parent / "wbsweep")


def wbsweep(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wbsweep ARGS`` in the current directory with the test's environment."""
    return subprocess.run(
        [WBSWEEP, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def create(sweep_file: Path, *args: str) -> str:
    """``wbsweep create --json`` and return the new sweep's id."""
    result = wbsweep("create", str(sweep_file), "--json", *args)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["sweep_id"])


def create_wandb(*args: str) -> str:
    """``wbsweep create`` of ``record_ranks.py`` on W&B (the test double), project ``proj``."""
    result = wbsweep(
        "create", str(TEST_SWEEPS / "record_ranks.py"), "--backend", "wandb",
        "--project", "proj", "--json", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["backend"] == "wandb"
    assert out["url"].endswith(f"/proj/sweeps/{out['sweep_id'].split('/')[-1]}")
    return str(out["sweep_id"])


def status(sweep_id: str) -> dict[str, Any]:
    result = wbsweep("status", sweep_id, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def invoke(*args: str, **env: str) -> Result:
    """Run ``wbsweep ARGS`` in this process through click's ``CliRunner``.

    ``stdout`` and ``stderr`` stay apart; ``exit_code`` is what ``sys.exit`` got.
    ``env`` is set in ``os.environ`` for the call only. An exception that gets
    past the CLI's own handling is raised here, traceback and all.
    """
    from click.testing import CliRunner

    from wbsweep.cli import main

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart by default
    return runner.invoke(main, list(args), env=env or None, catch_exceptions=False)


def invoke_create(sweep_file: Path, *args: str) -> str:
    """``wbsweep create --json`` in this process; the new sweep's id."""
    result = invoke("create", str(sweep_file), "--json", *args)
    assert result.exit_code == 0, result.stderr
    return str(json.loads(result.stdout)["sweep_id"])


def invoke_status(sweep_id: str) -> dict[str, Any]:
    """``wbsweep status --json`` in this process."""
    result = invoke("status", sweep_id, "--json")
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def sweep_with_results(objectives: list[float]) -> tuple[str, list[dict]]:
    """A tiny.py sweep whose runs finished with ``objectives`` (no training needed)."""
    from wbsweep.backends.base import RunEnd
    from wbsweep.backends.local import LocalBackend

    sweep_id = invoke_create(SWEEPS / "tiny.py", "--n-trials", str(len(objectives)))
    store = LocalBackend()
    runs = []
    for objective in objectives:
        run = store.claim_next(sweep_id, "test")
        assert run is not None
        store.record_result(run.id, objective, {"eval_loss": objective})
        store.finish_run(run.id, RunEnd(0))
        runs.append({"id": run.id, "params": run.params, "objective": objective})
    return sweep_id, runs


def processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """Live processes whose command line or environment contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.split(") ", 1)[-1].startswith("Z"):
            continue  # a zombie holds no memory and is its parent's to reap
        if needle in cmdline or needle in environ:
            found.append((int(entry.name), cmdline.strip()))
    return found


def rank_records(directory: Path) -> list[dict]:
    """Every line the ranks of ``tests/sweeps/record_ranks.py`` wrote to ``directory``."""
    lines = []
    for path in directory.glob("rank*.jsonl"):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every half second; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError("\n".join([f"timed out waiting for {what}", *_stop_agents()]))


#: Every agent ``start_agent`` started in this process: a wait that times out shows them.
_AGENTS: list[subprocess.Popen[str]] = []


def _stop_agents() -> list[str]:
    """Kill the agents still running, and say what each printed (so a hang says where)."""
    shown = []
    for proc in [proc for proc in _AGENTS if proc.poll() is None]:
        proc.kill()
        shown.append(f"--- {' '.join(map(str, proc.args[1:]))} printed:\n{_what_is_left(proc)}")
    _AGENTS.clear()
    return shown


# The W&B double's own tests: a grid over ``x`` that a plain ``train.py`` runs.
ENTITY = "test-entity"
PROJECT = "double-proj"


def sweep_config(values: list[int], **extra: Any) -> dict[str, Any]:
    """A grid sweep config over ``x`` in ``values``, with ``extra`` keys on top."""
    config: dict[str, Any] = {
        "method": "grid",
        "program": "train.py",
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {"x": {"values": values}},
    }
    config.update(extra)
    return config


def start_agent(sweep: str, record: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """``wbsweep agent SWEEP ARGS`` in the background, its ranks recording to ``record``.

    ``env`` adds ``tests/sweeps/record_ranks.py``'s knobs (``WBSWEEP_TEST_SLEEP``...);
    its output is piped: read it with ``communicate``. A :func:`wait_for` that times out
    kills the agents still running and shows what they printed.
    """
    proc = subprocess.Popen(
        [WBSWEEP, "agent", sweep, *args],
        env={**os.environ, "WBSWEEP_TEST_RECORD_DIR": str(record), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _AGENTS.append(proc)
    return proc


def _what_is_left(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """What ``proc`` printed and nobody read yet; at most ``timeout`` s of waiting
    (the processes it left behind may hold its output open while they end)."""
    if proc.stdout is None or proc.stdout.closed:
        return ""
    fd, chunks = proc.stdout.fileno(), []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def output_of(proc: subprocess.Popen[str], timeout: float) -> str:
    """The whole output of ``proc`` once it exits; if it has not within ``timeout`` s,
    it is killed and the test fails with what it had printed (so a hang says where)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args[:3]} did not exit within {timeout:g} s; it printed:\n{out}")
    return out


def training_pids(record: Path) -> set[int]:
    """The pids of the ranks that have recorded a training step in ``record``."""
    return {r["pid"] for r in rank_records(record) if r["event"] == "step"}


def wait_for_ranks_to_train(record: Path, ranks: int, timeout: float = 180) -> set[int]:
    """The pids of ``ranks`` ranks once each has recorded a training step."""
    wait_for(lambda: len(training_pids(record)) >= ranks, timeout, f"{ranks} rank(s) to train")
    return training_pids(record)


def signal_when(
    agent: subprocess.Popen[str],
    ready: Callable[[], object],
    sig: int,
    exit_code: int,
    *,
    what: str,
    timeout: float = 180,
) -> str:
    """Send ``sig`` to ``agent`` once ``ready()`` (``what``); its whole output.

    The agent must then exit ``exit_code`` within 90 s; it is killed if it has not.
    """
    try:
        wait_for(ready, timeout, what)
        agent.send_signal(sig)
        out, _ = agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == exit_code, out
    return out


def preempt_after_steps(
    agent: subprocess.Popen[str], steps: Callable[[], list[int]], timeout: float = 180
) -> str:
    """SIGTERM ``agent`` (a scheduler's notice) once its trial took 3 steps; its output.

    ``steps`` lists the steps the ranks recorded. The agent must exit 143.
    """
    import signal

    return signal_when(
        agent, lambda: max(steps(), default=0) >= 3, signal.SIGTERM, 143,
        what="a few training steps", timeout=timeout,
    )  # fmt: skip


# `wbsweep report`'s tests: a sweep whose runs finished with a known objective and history.

#: A random search over a log-scale rate, an optimizer and a width (numeric, categorical, int).
REPORT_CONFIG: dict[str, Any] = {
    "program": "sweeps/tiny.py",
    "method": "random",
    "metric": {"name": "objective", "goal": "minimize"},
    "parameters": {
        "learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        "optim": {"values": ["adamw", "sgd", "adafactor"]},
        "width": {"values": [16, 32, 64]},
        "seed": {"value": 7},
    },
    "command": ["${env}", "${interpreter}", "${program}", "${args_json_file}"],
}


def lr_objective(params: dict[str, Any]) -> float:
    """An objective that only the learning rate decides: best near 1e-3 (log distance)."""
    import math

    return abs(math.log10(params["learning_rate"]) + 3.0)


def local_report_sweep(
    store: Path | str,
    runs: int,
    *,
    objective: Callable[[dict[str, Any]], float] = lr_objective,
    steps: int = 4,
    goal: str = "minimize",
) -> tuple[str, list[dict[str, Any]]]:
    """A local sweep whose ``runs`` finished through the run queue, each with ``steps`` evals.

    Each run reports a history as a trial does (the objective and ``eval_loss``
    per step, falling to the final objective), then its result. Returns the
    sweep id and ``{"id", "params", "objective"}`` per run, oldest first.
    """
    import copy

    from wbsweep.backends.base import RunEnd
    from wbsweep.backends.local import LocalBackend

    backend = LocalBackend(store)
    config = copy.deepcopy(REPORT_CONFIG)
    config["metric"]["goal"] = goal
    sweep_id = backend.create(config, sweep_file=config["program"])
    queue = backend.queue
    made = []
    for _ in range(runs):
        run = queue.claim_next(sweep_id, "report-test")
        assert run is not None, "the sweep handed out no run"
        final = objective(run.params)
        for step in range(1, steps + 1):
            value = final + (steps - step) * 0.25
            queue.record_history(run.id, step * 10, {"objective": value, "eval_loss": value * 2})
        queue.record_result(run.id, final, {"eval_loss": final * 2})
        queue.finish_run(run.id, RunEnd(0))
        made.append({"id": run.id, "params": run.params, "objective": final})
    return sweep_id, made


def start_in_terminal(
    argv: list[str], columns: int = 200, lines: int = 50
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` with a pty of ``columns`` x ``lines`` as its terminal; it and the pty's fd.

    The caller reads what it draws from the fd and closes it.
    """
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": str(columns), "LINES": str(lines)},
    )
    os.close(follower)
    return proc, leader


def post_to_double(double: Any, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` as JSON to the W&B double with its API key, as the SDK does; the answer."""
    import base64
    import urllib.request

    token = base64.b64encode(f"api:{double.api_key}".encode()).decode()
    request = urllib.request.Request(
        f"{double.base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert not (isinstance(answer, dict) and answer.get("errors")), answer
    return answer


_UPSERT = (
    "mutation UpsertBucket($name: String, $project: String, $entity: String,"
    " $sweep: String) { upsertBucket(input: {name: $name, modelName: $project,"
    " entityName: $entity, sweep: $sweep}) { bucket { id name } inserted } }"
)


def add_sweep_runs(double: Any, sweep_id: str, run_ids: list[str]) -> list[str]:
    """Running runs ``run_ids`` of the W&B sweep, as a trial's first upload makes them."""
    entity, project, sweep = sweep_id.split("/")
    for run_id in run_ids:
        variables = {"name": run_id, "project": project, "entity": entity, "sweep": sweep}
        post_to_double(double, "/graphql", {"query": _UPSERT, "variables": variables})
    return run_ids


def torch_on_one_thread(monkeypatch: Any) -> Callable[[], None]:
    """Torch on one CPU thread, in this process and (``OMP_NUM_THREADS``) in its children.

    For tests that train tiny models on the CPU: a second intra-op thread gains
    nothing there and spins between ops, which on a busy 2-core machine multiplies
    a tiny training's CPU time (and wall time) several times. Returns what puts
    this process's thread count back (``monkeypatch`` undoes the variable). Test
    modules use it through the ``one_torch_thread`` fixture (``tests/conftest.py``).
    """
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(before)
