"""`lookahead run --ray` and `Fleet` on a real local Ray cluster: 2 CPU workers, a tiny fp32 model.

Outputs equal the single-process run token for token, a worker killed mid-run
loses and duplicates nothing, the shared datastore and the fleet's history reach
both workers, and the driver killed mid-run resumes across the cluster.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookahead.run.cli import app

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.ray

LOOKAHEAD = str(Path(sys.executable).with_name("lookahead"))
DOC = "The fleet of engines shares one datastore, read-only, through the object store of the cluster."
PROMPTS = [f"Repeat exactly: item {i} costs {3 * i} dollars; item {i} costs {3 * i} dollars." for i in range(12)]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module; every Fleet here joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def single(tiny_model_dir):
    """The single-process greedy answers: id -> output token ids."""
    from lookahead import Lookahead

    lm = Lookahead(str(tiny_model_dir), drafter="none")
    return {r.id: r.token_ids for r in lm.generate(PROMPTS, max_new_tokens=24)}


def test_two_workers_equal_single_process_and_share_the_datastore(cluster, tiny_model_dir, single, tmp_path):
    from lookahead import Fleet

    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    # A fair share is half the queue, so each round gives each worker exactly one shard whatever
    # their speeds: round 1 six requests each, round 2 one each, carrying the other's six outputs.
    with Fleet(str(tiny_model_dir), workers=2, shard_size=6, corpus=[str(doc)]) as fleet:
        results = list(fleet.results(PROMPTS, max_new_tokens=24))
        again = list(fleet.results(PROMPTS[:2], max_new_tokens=24))
        stats = fleet.summary()
    assert sorted(r.id for r in results) == sorted(single)  # each exactly once
    assert all(r.error is None and r.token_ids == single[r.id] for r in results + again)
    workers = stats["per_worker"]
    assert [(w["worker"], w["requests"]) for w in workers] == [(0, 7), (1, 7)]
    # the corpus built once by the driver is in both workers, and each learned the other's outputs
    assert workers[0]["shared_store_tokens"] == workers[1]["shared_store_tokens"] > 0
    assert [w["fleet_outputs_learned"] for w in workers] == [6, 6], workers
    assert stats["fleet_chunks"] == 1 and stats["worker_deaths"] == 0


def test_a_worker_killed_mid_run_loses_nothing(cluster, tiny_model_dir, single):
    from lookahead import EngineConfig, Fleet

    # Half the requests each, one at a time: at the first result the victim still holds five.
    with Fleet(str(tiny_model_dir), workers=2, shard_size=6, config=EngineConfig(max_batch_size=1)) as fleet:
        victim = fleet.worker_pids()[0]
        results = []
        for r in fleet.results(PROMPTS, max_new_tokens=24):
            if not results:
                os.kill(victim, signal.SIGKILL)
            results.append(r)
        stats = fleet.summary()
    ids = [r.id for r in results]
    assert sorted(ids) == sorted(single)  # none lost, none twice
    assert all(r.error is None and r.token_ids == single[r.id] for r in results)
    assert stats["worker_deaths"] == 1 and stats["workers_replaced"] == 1 and stats["requests_requeued"] >= 1
    assert victim not in [w["pid"] for w in stats["per_worker"]]


def test_cli_driver_killed_then_resumed_on_the_cluster(cluster, tiny_model_dir, single, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "messages": [{"role": "user", "content": p}]}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out.jsonl"
    args = ["run", "-i", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--max-new-tokens", "24",
            "--ray", "local", "--workers", "2", "--max-batch-size", "1"]
    # The driver (with the Ray instance it started) is killed once it has written a result.
    proc = subprocess.Popen([LOOKAHEAD, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (out.exists() and out.read_text()):
        time.sleep(0.05)
    proc.kill()
    _, stderr = proc.communicate(timeout=60)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(written) < len(PROMPTS), stderr

    res = CliRunner().invoke(app, [*args, "--resume", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["resumed"] == len(written) and summary["fleet"]["workers"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(single)  # every request exactly once
    assert all(r["output_ids"] == single[r["id"]] for r in rows)


def test_without_ray_the_option_says_how_to_install_and_plain_runs_work(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    src = tmp_path / "in.txt"
    src.write_text("Repeat exactly: one two three.\n")
    args = ["run", "-i", str(src), "--model", str(tiny_model_dir), "--max-new-tokens", "4"]
    res = CliRunner().invoke(app, [*args, "--ray", "local"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: --ray needs Ray, which is not installed: pip install 'lookahead[ray]'"
    assert CliRunner().invoke(app, [*args, "--json"]).exit_code == 0


@pytest.mark.parametrize("extra, message", [
    (["--ray", "127.0.0.1:1"], "error: cannot reach the Ray cluster at '127.0.0.1:1'"),
    (["--ray", "nonsense"], "error: --ray must be local, auto, host:port or ray://host:port; got 'nonsense'"),
    (["--workers", "2"], "error: --workers needs --ray ADDRESS"),
    (["--ray", "local", "--workers", "0"], "error: --workers must be > 0, got 0"),
])
def test_bad_cluster_options_are_one_line_errors(tiny_model_dir, tmp_path, extra, message):
    src = tmp_path / "in.txt"
    src.write_text("Hello.\n")
    res = CliRunner().invoke(app, ["run", "-i", str(src), "--model", str(tiny_model_dir), *extra])
    assert res.exit_code == 2 and res.output.startswith(message) and len(res.output.strip().splitlines()) == 1


def test_more_workers_than_the_cluster_has_is_a_one_line_error(cluster, tiny_model_dir):
    from lookahead import Fleet
    from lookahead.fleet.cluster import FleetError

    with pytest.raises(FleetError, match=r"^--workers 3 is more than the Ray cluster's 2 CPU cores$"):
        Fleet(str(tiny_model_dir), workers=3)
