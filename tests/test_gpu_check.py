"""The GPU check's script runs, stage by stage, as a dry run on the CPU (scripts/gpu-check.sh --dry-run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_writes_every_stage(tiny_model_dir, tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "MODEL": str(tiny_model_dir), "PY": sys.executable}
    env.pop("TRITON_INTERPRET", None)  # the script sets what each stage needs
    res = subprocess.run(["bash", "scripts/gpu-check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    index = (tmp_path / "index.md").read_text()
    assert res.returncode == 0, index + res.stderr
    for stage in ("gpu-tests", "kernel", "e2e"):
        assert f"## {stage}" in index and "(exit 0," in index.split(f"## {stage}")[1].split("\n\n")[1]
    rows = json.loads((tmp_path / "e2e.json").read_text())["rows"]
    systems = {(r["workload"], r["system"]) for r in rows}
    assert {("gec", "hf-compiled"), ("rag", "auto/goodput"), ("rag", "plain")} <= systems
    assert all(r["identical"] == r["requests"] for r in rows if r["identical"] is not None)
    assert json.loads((tmp_path / "kernel.json").read_text())["results"]
