"""The end-to-end benchmark runs every system on a tiny model and gets the same greedy outputs."""
from __future__ import annotations

import json

from lookahead.eval import bench_e2e


def test_bench_e2e_runs_every_system_and_all_agree(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "e2e.json"
    bench_e2e.main(["--model", str(tiny_model_dir), "--workloads", "gec", "rag", "--limit", "2",
                    "--max-new-tokens", "8", "--systems", "prompt-lookup/fixed", "auto/goodput",
                    "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["workload"], r["system"]) for r in rows] == [
        (w, s) for w in ("gec", "rag") for s in ("plain", "hf-greedy", "hf-pld", "prompt-lookup/fixed", "auto/goodput")]
    # fp32 greedy: Hugging Face and every drafter give our plain output, token for token
    assert all(r["identical"] == r["requests"] == 2 and r["output_tokens"] > 0 for r in rows), rows
    assert all((r["decode_rows"] is None) == r["system"].startswith("hf-") for r in rows)
    assert all(r["decode_rows"] == 1.0 for r in rows if r["system"] == "plain")  # no draft, one row
    assert "| gec | auto/goodput |" in capsys.readouterr().out
