"""The done-when test of serving: vLLM's OpenAI-compatible server with ``--scheduler-cls
kvsched.integrations.vllm.KVSchedScheduler`` (policy ``mcsf``, which needs predictions: requests
without them take the server's fallback) on 127.0.0.1, the tiny Llama and a tiny byte-level
tokenizer built locally. Ordinary, streaming, chat, structured-output and prediction-carrying
requests all succeed; then a corpus of malformed ones each get a 4xx or a per-request error; the
server is still alive and serving at the end. The server is stopped by its PID in a finally.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.engine

STARTUP_TIMEOUT_S = 420          # 2 shared CPU cores: the engine starts in 1-3 minutes
REQUEST_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def server_model(tiny_model, tmp_path_factory):
    """The tiny Llama with a tokenizer beside it (the server takes text prompts)."""
    import shutil

    from kvsched.integrations.vllm.tiny_model import build_tiny_tokenizer
    directory = tmp_path_factory.mktemp("tiny-llama-tok")
    for name in os.listdir(tiny_model):
        shutil.copy(os.path.join(tiny_model, name), directory / name)
    return str(build_tiny_tokenizer(directory))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body, *, raw: bool = False) -> tuple[int, str]:
    data = body if raw else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def server(server_model, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               KVSCHED_POLICY="mcsf")
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", server_model,
            "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
            "--scheduler-cls", "kvsched.integrations.vllm.KVSchedScheduler",
            "--block-size", "32", "--num-gpu-blocks-override", "64", "--kv-cache-memory-bytes", str(4 << 20),
            "--max-model-len", "512", "--max-num-seqs", "8", "--max-num-batched-tokens", "256",
            "--enforce-eager", "--dtype", "bfloat16"]              # prefix caching on: vLLM's default
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(base):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start (exit {proc.poll()}):\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield base, proc, log_path
    finally:
        _stop(proc)


def _metric(base: str, name: str) -> float:
    """The sum of a counter over its labels, from the server's Prometheus /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its PID: it leads its own session), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _completion(prompt="the scheduler", max_tokens=8, **extra):
    return {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, **extra}


def _stream(base: str, body) -> tuple[int, list]:
    """POST a streaming request; returns (status, the parsed data events, [DONE] excluded)."""
    request = urllib.request.Request(base + "/v1/completions", data=json.dumps({**body, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        for line in response:
            line = line.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: "):]))
        return response.status, events


def test_the_server_serves_ordinary_requests_and_survives_malformed_ones(server):
    base, proc, log_path = server
    ordinary = {
        **{f"completion {i}": ("/v1/completions", _completion(f"request {i} of the test", 4 + 3 * i))
           for i in range(4)},
        "chat": ("/v1/chat/completions", {"model": "tiny", "max_tokens": 6,
                                          "messages": [{"role": "user", "content": "hello"}]}),
        "structured choice": ("/v1/completions", _completion(structured_outputs={"choice": ["yes", "no"]})),
        "structured json": ("/v1/completions", _completion(max_tokens=40, response_format={
            "type": "json_schema", "json_schema": {"name": "n", "schema": {
                "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}})),
        "point prediction": ("/v1/completions", _completion(vllm_xargs={"kvsched_predicted_output_tokens": 8})),
        "interval prediction": ("/v1/completions", _completion(vllm_xargs={
            "kvsched_predicted_output_tokens": 10, "kvsched_predicted_lo": 4, "kvsched_predicted_hi": 10,
            "kvsched_type_id": 1})),
    }
    with ThreadPoolExecutor(len(ordinary)) as pool:           # at once: they share batches
        results = dict(zip(ordinary, pool.map(lambda item: _post(base + item[0], item[1]), ordinary.values())))
    for name, (status, text) in results.items():
        assert status == 200, f"{name}: {status} {text}"
        assert json.loads(text)["choices"][0]["finish_reason"] in ("length", "stop"), name
    for i in range(4):
        usage = json.loads(results[f"completion {i}"][1])["usage"]
        assert usage["completion_tokens"] <= 4 + 3 * i
    assert json.loads(results["structured choice"][1])["choices"][0]["text"] in ("yes", "no")
    assert isinstance(json.loads(json.loads(results["structured json"][1])["choices"][0]["text"])["ok"], bool)
    status, events = _stream(base, _completion(max_tokens=6, vllm_xargs={"kvsched_predicted_output_tokens": 6}))
    assert status == 200 and events and events[-1]["choices"][0]["finish_reason"] == "length"
    shared = " ".join(f"w{i}" for i in range(40))         # over a 32-token block: later ones hit it
    for i in range(3):
        status, text = _post(base + "/v1/completions", _completion(f"{shared} tail {i}", 4))
        assert status == 200, text
    assert _metric(base, "vllm:prefix_cache_hits_total") > 0

    malformed = [
        {"kvsched": "a string"}, {"kvsched": 5}, {"kvsched": ["x", "y"]}, {"kvsched": {"predicted_lo": 1}},
        {"kvsched_bogus": 1}, {"kvsched_predicted_output_tokens": "lots"},
        {"kvsched_predicted_output_tokens": -3}, {"kvsched_predicted_output_tokens": 0},
        {"kvsched_predicted_lo": 1.5}, {"kvsched_predicted_lo": 9, "kvsched_predicted_hi": 2},
        {"kvsched_request_id": "abc"}, {"kvsched_request_id": -1}, {"kvsched_type_id": "two"},
        {"kvsched_arrival_time": "inf"}, {"kvsched_predicted_hi": "1e400"},
    ]
    bodies = [_completion(vllm_xargs=x) for x in malformed] + [
        _completion(vllm_xargs="not a dict"), _completion(max_tokens=-1), _completion(max_tokens=10_000),
        _completion(structured_outputs={"json": "{not json"}), {"model": "tiny"},
    ]
    for body in bodies:
        status, text = _post(base + "/v1/completions", body)
        assert 400 <= status < 600 and "error" in json.loads(text), (body, status, text)
    status, _ = _post(base + "/v1/completions", b"{not json", raw=True)
    assert 400 <= status < 500
    status, events = _stream(base, _completion(vllm_xargs={"kvsched": "in a stream"}))
    assert any("error" in event for event in events), events

    assert proc.poll() is None and _healthy(base)
    status, text = _post(base + "/v1/completions", _completion("still serving", 5))
    assert status == 200 and json.loads(text)["usage"]["completion_tokens"] == 5, text
    log = log_path.read_text()
    assert "kvsched: request" in log and "refused" in log          # the reasons are in the log
    assert "EngineDeadError" not in log and "Traceback" not in log, log[-4000:]
    assert "kvsched step" not in log, log[-4000:]          # no step the engine did differently (a gap)
