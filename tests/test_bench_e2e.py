"""The end-to-end benchmark runs every system on a tiny model and gets the same greedy outputs."""
from __future__ import annotations

import json

import pytest

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


def test_llama_cpp_is_skipped_with_a_note_off_a_gguf(tiny_model_dir, capsys):
    bench_e2e.main(["--model", str(tiny_model_dir), "--workloads", "gec", "--limit", "1",
                    "--max-new-tokens", "2", "--systems", "plain"])
    out = capsys.readouterr().out
    assert "llama.cpp: skipped: llama.cpp runs GGUF files" in out and "| llama.cpp |" not in out


@pytest.mark.slow
def test_llama_cpp_decodes_our_prompt_ids_greedily(smollm2):
    """The same token ids reach llama.cpp (its Q4_1 kernels agree with our de-quantised fp32 on the
    first tokens of a confident answer), and each request starts from an empty cache."""
    pytest.importorskip("llama_cpp")
    from lookahead.engine import Engine, EngineConfig, SamplingParams
    from lookahead.eval.llama_cpp_peer import LlamaCppGreedy
    from lookahead.eval.workloads import load_workload
    from lookahead.models import bundled_gguf
    from lookahead.run.requests_io import RequestSpec, encode_prompt

    case = load_workload("gec", limit=1)[0]
    ids = encode_prompt(smollm2.tokenizer, RequestSpec(case["id"], messages=case["messages"]))
    engine = Engine(smollm2.model, smollm2.tokenizer, config=EngineConfig(controller="off", kv_cache_tokens=2048))
    ours = engine.run({"r": ids}, SamplingParams(max_new_tokens=8))["r"].output_ids
    peer = LlamaCppGreedy(bundled_gguf(), threads=2, n_ctx=1024)
    first, forwards = peer.generate(ids, 8, engine.eos)
    assert peer.generate(ids, 8, engine.eos)[0] == first and forwards == len(first) == 8
    assert first[:6] == ours[:6]
