"""`lookahead serve` end to end: the official openai client against a real server on a loopback port,
on a tiny random model with SmolLM2's tokenizer and chat template."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="lookahead serve needs the serve extra: pip install 'lookahead[serve]'")
pytest.importorskip("uvicorn", reason="lookahead serve needs the serve extra: pip install 'lookahead[serve]'")
openai = pytest.importorskip("openai", reason="the serve tests talk to the server with the openai client")

from typer.testing import CliRunner  # noqa: E402

from lookahead.run.cli import app  # noqa: E402
from lookahead.serve import serve_in_background  # noqa: E402

LOOKAHEAD = str(Path(sys.executable).with_name("lookahead"))
README = Path(__file__).resolve().parents[1] / "README.md"
TOKENS = 16
CHATS = [f"{w} " * 6 + "and so on" for w in ("one two", "red blue", "cat dog", "sun moon", "up down", "left right")]
RAW = "a b c a b c a b c"


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """`lookahead run --json`'s greedy texts for the test prompts: chat i, and "raw" (no chat template)."""
    src = tmp_path_factory.mktemp("serve") / "in.jsonl"
    lines = [{"id": str(i), "messages": [{"role": "user", "content": c}]} for i, c in enumerate(CHATS)]
    src.write_text("\n".join(json.dumps(x) for x in lines + [{"id": "raw", "prompt": RAW}]) + "\n")
    res = CliRunner().invoke(app, ["run", "--input", str(src), "--model", str(tiny_model_dir), "--dtype", "float32",
                                   "--max-new-tokens", str(TOKENS), "--json"])
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.strip().splitlines()[:-1]]
    return {r["id"]: r["text"] for r in rows}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with serve_in_background(str(tiny_model_dir), dtype="float32") as s:
        yield s


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def chat(server, i: int, **kw):
    return client(server).chat.completions.create(model="any", messages=[{"role": "user", "content": CHATS[i]}],
                                                   max_tokens=TOKENS, **kw)


def metrics(server) -> dict[str, float]:
    """/metrics parsed as Prometheus text: sample name (with its labels) -> value; the format checked line by line."""
    host, port = server.url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/plain")
    out, typed = {}, set()
    for line in resp.read().decode().splitlines():
        if m := re.fullmatch(r"# TYPE (\w+) (counter|gauge|summary)", line):
            typed.add(m[1])
        elif not line.startswith("# HELP "):
            m = re.fullmatch(r'(\w+)(\{\w+="[^"]*"(?:,\w+="[^"]*")*\})? (\S+)', line)
            assert m, f"not Prometheus text: {line!r}"
            assert m[1] in typed or m[1].rsplit("_", 1)[0] in typed, f"{m[1]} has no # TYPE line"
            out[m[1] + (m[2] or "")] = float(m[3])
    return out


def raw_post(server, path: str, body: bytes) -> tuple[int, dict, dict]:
    host, port = server.url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), json.loads(resp.read())


def settled(server, timeout: float = 30.0, **want) -> dict[str, float]:
    """/metrics once nothing runs or waits and every KV block is free (and `want` samples are reached)."""
    end = time.monotonic() + timeout
    while True:
        m = metrics(server)
        done = (m["lookahead_requests_running"] == 0 and m["lookahead_requests_waiting"] == 0
                and m["lookahead_kv_blocks_free"] == m["lookahead_kv_blocks_total"]
                and all(m[k] >= v for k, v in want.items()))
        if done or time.monotonic() > end:
            return m
        time.sleep(0.05)


def test_answers_equal_lookahead_run_streamed_or_not(server, reference):
    reply = chat(server, 0)
    assert reply.choices[0].message.content == reference["0"] and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == TOKENS and reply.id.startswith("chatcmpl-")
    parts, usage = [], None
    for c in chat(server, 0, stream=True, stream_options={"include_usage": True}):
        if c.choices:
            parts.append(c.choices[0].delta.content or "")
        else:
            usage = c.usage
    assert "".join(parts) == reference["0"] and usage.completion_tokens == TOKENS
    c = client(server)
    assert c.completions.create(model="any", prompt=RAW, max_tokens=TOKENS).choices[0].text == reference["raw"]
    streamed = c.completions.create(model="any", prompt=RAW, max_tokens=TOKENS, stream=True)
    assert "".join(x.choices[0].text for x in streamed) == reference["raw"]
    [model] = c.models.list().data
    assert model.id == server.server.lm.model_name


def test_logprobs_and_lookahead_fields(server, reference):
    reply = chat(server, 1, logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reference["1"]
    assert len(content) == TOKENS and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    gec = client(server).chat.completions.create(model="any", messages=[], max_tokens=4,
                                                 extra_body={"task": "gec", "source": "She go home."})
    assert gec.usage.prompt_tokens > 8 and gec.usage.completion_tokens == 4  # the task's instruction + the source
    rag = chat(server, 2, extra_body={"documents": ["Ann wrote the report."], "top_k": 5})
    assert rag.usage.prompt_tokens > chat(server, 2).usage.prompt_tokens


def test_concurrent_clients_each_get_their_answer_alone(server, reference):
    with ThreadPoolExecutor(6) as pool:
        texts = list(pool.map(lambda i: chat(server, i).choices[0].message.content, range(6)))
    assert texts == [reference[str(i)] for i in range(6)]


def test_clients_that_leave_cancel_their_requests_and_free_every_block(server):
    before = metrics(server)["lookahead_requests_total{outcome=\"cancelled\"}"]
    stream = client(server).chat.completions.create(model="any", messages=[{"role": "user", "content": CHATS[3]}],
                                                    max_tokens=1500, stream=True)
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            break
    stream.close()  # the streaming client goes away after its first text
    host, port = server.url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)  # and one that waits for a whole answer
    conn.request("POST", "/v1/completions", json.dumps({"prompt": RAW, "max_tokens": 1500}))
    end = time.monotonic() + 10
    while metrics(server)["lookahead_requests_running"] == 0 and time.monotonic() < end:
        time.sleep(0.02)
    conn.close()
    m = settled(server, **{"lookahead_requests_total{outcome=\"cancelled\"}": before + 2})
    assert m["lookahead_requests_total{outcome=\"cancelled\"}"] == before + 2
    assert m["lookahead_kv_blocks_free"] == m["lookahead_kv_blocks_total"] and m["lookahead_requests_running"] == 0
    assert server.server.engine._jobs == {}


def test_bad_requests_get_400_with_an_openai_error_and_the_server_goes_on(server, reference):
    status, _, body = raw_post(server, "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("invalid JSON") and set(body["error"]) == {"message", "type",
                                                                                          "param", "code"}
    for kw, param in ((dict(n=2), "n"), (dict(temperature=-1), "temperature"),
                      (dict(extra_body={"frequency_penalty": 0.5}), "frequency_penalty")):
        with pytest.raises(openai.BadRequestError) as e:
            chat(server, 0, **kw)
        assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body
    status, _, body = raw_post(server, "/v1/completions", json.dumps({"prompt": RAW, "task": "rag"}).encode())
    assert status == 400 and "needs documents" in body["error"]["message"]
    assert chat(server, 0).choices[0].message.content == reference["0"]


def test_a_request_the_engine_fails_fails_alone(server, reference):
    drafter = server.server.lm.engine.drafter
    propose = drafter.propose

    def once(*a, **k):
        drafter.propose = propose
        raise RuntimeError("drafter bug")

    drafter.propose = once
    with pytest.raises(openai.InternalServerError) as e:
        chat(server, 4)
    assert "drafter bug" in e.value.body["message"] and e.value.body["type"] == "server_error"
    assert chat(server, 4).choices[0].message.content == reference["4"]


def test_metrics_are_prometheus_text(server):
    chat(server, 5)
    m = metrics(server)
    assert m['lookahead_requests_total{outcome="served"}'] >= 1 and m["lookahead_generated_tokens_total"] >= TOKENS
    assert m["lookahead_target_forwards_total"] >= 1 and m["lookahead_tokens_per_forward"] >= 1
    assert m["lookahead_draft_nodes_accepted_total"] <= m["lookahead_draft_nodes_verified_total"]
    assert m["lookahead_step_seconds_count"] == m["lookahead_target_forwards_total"] and m["lookahead_engine_up"] == 1
    for name in ("lookahead_tokens_per_second", "lookahead_requests_waiting", "lookahead_tree_nodes_sum"):
        assert name in m


def test_random_disconnects_leave_no_block_and_no_request(server):
    """A small soak: clients that leave at random points, streaming or not (eval/bench_serve.py --soak: 1,000)."""
    import random

    rng = random.Random(0)

    def one(i):
        c = client(server)
        stream = c.chat.completions.create(model="any", messages=[{"role": "user", "content": CHATS[i % 6]}],
                                           max_tokens=rng.choice((4, 64, 400)), stream=True)
        leave = rng.randrange(6)
        for n, _ in enumerate(stream):
            if n == leave:
                break
        stream.close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(24)))
    m = settled(server)
    assert m["lookahead_kv_blocks_free"] == m["lookahead_kv_blocks_total"] and server.server.engine._jobs == {}
    end = time.monotonic() + 10  # each connection's task ends once its response is wound down
    while server.server.uvicorn.server_state.tasks and time.monotonic() < end:
        time.sleep(0.05)
    assert not server.server.uvicorn.server_state.tasks


def test_a_full_queue_answers_503_with_retry_after(tiny_model_dir):
    with serve_in_background(str(tiny_model_dir), dtype="float32", max_queue=1,
                             config=_config(max_batch_size=1)) as s:
        barrier = threading.Barrier(6)

        def one(i):
            barrier.wait()
            try:
                return chat(s, i, extra_body={"max_tokens": 100}) and "ok"
            except openai.APIStatusError as e:
                return e.status_code, e.response.headers.get("retry-after"), e.body["code"]

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(one, range(6)))
        refused = [o for o in outcomes if o != "ok"]
        assert 2 <= outcomes.count("ok") <= 5 and refused, outcomes
        assert all(o == (503, "1", "queue_full") for o in refused), outcomes
        assert metrics(s)['lookahead_requests_total{outcome="refused"}'] == len(refused)


def test_a_dead_engine_loop_shows_in_health_and_answers_500(tiny_model_dir):
    with serve_in_background(str(tiny_model_dir), dtype="float32") as s:
        def broken(*a):
            raise RuntimeError("lost the model")

        s.server.lm.step = s.server.lm.cancel = broken
        with pytest.raises(openai.InternalServerError):
            chat(s, 0)
        status, body = _get(s, "/health")
        assert status == 500 and "lost the model" in body["error"]
        with pytest.raises(openai.InternalServerError) as e:
            chat(s, 0)
        assert "engine loop stopped" in e.value.body["message"]


def test_sigterm_drains_the_requests_in_flight_then_exits_0(tiny_model_dir):
    proc = subprocess.Popen([LOOKAHEAD, "serve", "--model", str(tiny_model_dir), "--dtype", "float32", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if m := re.search(r"at (http://\S+/v1)", line):
                break
        url = m[1]
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
        c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        stream = c.completions.create(model="any", prompt=RAW, max_tokens=40, stream=True)
        texts, finish = [], None
        for chunk in stream:
            if not texts:
                proc.send_signal(signal.SIGTERM)  # after the first chunk: the rest must still come
            texts.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "length" and proc.wait(30) == 0
        with pytest.raises(openai.APIConnectionError):
            c.models.list()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_readme_example_runs_against_a_server(server, capsys):
    """The README's serving example, as written, but on the tiny model's server instead of SmolLM2's."""
    [code] = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "serve_in_background" in b]
    import lookahead.serve

    started = []

    def on_tiny(*a, **k):
        started.append(1)
        return _Shared(server)

    real = lookahead.serve.serve_in_background
    lookahead.serve.serve_in_background = on_tiny
    try:
        exec(compile(code, str(README), "exec"), {})
    finally:
        lookahead.serve.serve_in_background = real
    assert started and capsys.readouterr().out.strip()


class _Shared:
    """The module's server, as a `with` block's own (left running at its end)."""

    def __init__(self, server):
        self.url = server.url

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _config(**kw):
    from lookahead.engine import EngineConfig

    return EngineConfig(**kw)


def _get(server, path: str) -> tuple[int, dict]:
    host, port = server.url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())
