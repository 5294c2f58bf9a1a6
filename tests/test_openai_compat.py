"""OpenAI-compatible providers against a real HTTP server on 127.0.0.1 that plays scripted answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

import amem.embed.openai_compat as embed_mod
from amem.embed.openai_compat import OpenAICompatEmbedder
from amem.errors import EmbedderError, LLMOutputError, LLMUnavailable
from amem.llm.base import Message
from amem.llm.openai_compat import OpenAICompatLLM


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0  # seconds between the body's bytes: each read is quick, the whole answer is not


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class Server:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.default = Reply(500, {"error": {"message": "script exhausted"}})
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append(Seen(self.path, json.loads(raw or b"{}"), dict(self.headers)))
                reply = server.script.pop(0) if server.script else server.default
                if reply.delay:
                    time.sleep(reply.delay)
                data = json.dumps(reply.body).encode() if not isinstance(reply.body, bytes) else reply.body
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if reply.drip:
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    else:
                        self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def chat(content: str | None = '{"ok": true}', prompt: int = 12, completion: int = 5) -> dict[str, Any]:
    return {
        "model": "test-model-0001",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
MSGS = [Message("system", "be brief"), Message("user", "hi")]


def make_llm(server: Server, sleeps: list[float], **kw: Any) -> OpenAICompatLLM:
    return OpenAICompatLLM("test-model", server.url, "sk-test", sleep=sleeps.append, **kw)


def test_chat_happy_path_passes_schema_and_records_usage(server: Server) -> None:
    server.script = [Reply(body=chat(prompt=42, completion=7))]
    llm = make_llm(server, [])
    out = llm.complete(MSGS, schema=SCHEMA, max_tokens=99, temperature=0.3)
    assert out.text == '{"ok": true}'
    assert (out.usage.input_tokens, out.usage.output_tokens) == (42, 7)
    assert out.model == "openai:test-model-0001"
    req = server.seen[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == "Bearer sk-test"
    assert req.body["model"] == "test-model"
    assert req.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert (req.body["max_tokens"], req.body["temperature"]) == (99, 0.3)
    assert req.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": False},
    }
    assert llm.supports_schema


def test_no_schema_sends_no_response_format(server: Server) -> None:
    server.script = [Reply(body=chat("plain"))]
    assert make_llm(server, []).complete(MSGS).text == "plain"
    assert "response_format" not in server.seen[0].body


def test_429_is_retried_honouring_retry_after(server: Server) -> None:
    server.script = [
        Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}),
        Reply(body=chat()),
    ]
    sleeps: list[float] = []
    assert make_llm(server, sleeps).complete(MSGS).text == '{"ok": true}'
    assert sleeps == [7.0]
    assert len(server.seen) == 2


def test_5xx_exhausts_retries_with_backoff(server: Server) -> None:
    server.script = [Reply(500, {"error": {"message": "boom"}})] * 3
    sleeps: list[float] = []
    with pytest.raises(LLMUnavailable, match=r"HTTP 500 after 3 attempt\(s\).*boom"):
        make_llm(server, sleeps, max_retries=2).complete(MSGS)
    assert len(server.seen) == 3
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.75 and 0.5 <= sleeps[1] <= 1.5


def test_default_retries_then_success(server: Server) -> None:
    server.script = [Reply(503, "busy"), Reply(502, "bad gw"), Reply(408, "timeout"), Reply(body=chat())]
    sleeps: list[float] = []
    assert make_llm(server, sleeps).complete(MSGS).text == '{"ok": true}'
    assert len(sleeps) == 3 and len(server.seen) == 4


def test_response_format_downgrade_is_remembered(server: Server) -> None:
    bad = {
        "error": {"message": "Invalid parameter: 'response_format' of type 'json_schema' is not supported"}
    }
    server.script = [
        Reply(400, bad),
        Reply(400, {"error": {"message": "response_format json_object unsupported"}}),
        Reply(body=chat()),
        Reply(body=chat()),
    ]
    llm = make_llm(server, [])
    assert llm.complete(MSGS, schema=SCHEMA).text == '{"ok": true}'
    formats = [s.body.get("response_format", {}).get("type") for s in server.seen]
    assert formats == ["json_schema", "json_object", None]
    assert not llm.supports_schema
    llm.complete(MSGS, schema=SCHEMA)
    assert "response_format" not in server.seen[-1].body, "the downgrade sticks for the instance"


def test_other_400_is_not_retried(server: Server) -> None:
    server.script = [Reply(400, {"error": {"message": "context length exceeded"}})]
    with pytest.raises(LLMUnavailable, match="HTTP 400: context length exceeded"):
        make_llm(server, []).complete(MSGS, schema=SCHEMA)
    assert len(server.seen) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_point_at_the_key(server: Server, status: int) -> None:
    server.script = [Reply(status, {"error": {"message": "Incorrect API key"}})]
    with pytest.raises(LLMUnavailable, match="check AMEM_LLM_API_KEY"):
        make_llm(server, []).complete(MSGS)
    assert len(server.seen) == 1


def test_empty_content_is_an_output_error(server: Server) -> None:
    server.script = [Reply(body=chat(None))]
    with pytest.raises(LLMOutputError, match="empty answer"):
        make_llm(server, []).complete(MSGS)


def test_garbage_envelope_is_unavailable(server: Server) -> None:
    server.script = [Reply(body=b"<html>proxy error</html>")]
    with pytest.raises(LLMUnavailable, match="not an OpenAI chat completion"):
        make_llm(server, []).complete(MSGS)


def test_timeout_becomes_unavailable(server: Server) -> None:
    server.default = Reply(body=chat(), delay=1.0)
    sleeps: list[float] = []
    llm = OpenAICompatLLM("m", server.url, "", timeout=0.1, max_retries=1, sleep=sleeps.append)
    start = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out"):
        llm.complete(MSGS)
    assert time.monotonic() - start < 0.9
    assert len(sleeps) == 1
    assert "Authorization" not in server.seen[0].headers, "no key, no header (local servers)"


def test_connection_refused_becomes_unavailable() -> None:
    llm = OpenAICompatLLM("m", "http://127.0.0.1:9/v1", "", max_retries=1, sleep=lambda s: None)
    with pytest.raises(LLMUnavailable, match="could not connect"):
        llm.complete(MSGS)


def emb_body(vectors: list[list[float]], order: list[int] | None = None) -> dict[str, Any]:
    idx = order or list(range(len(vectors)))
    return {"data": [{"index": i, "embedding": vectors[i], "object": "embedding"} for i in idx]}


def test_embeddings_batch_order_dimensions_and_normalisation(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script = [
        Reply(body=emb_body([[3.0, 4.0], [0.0, 2.0]], order=[1, 0])),
        Reply(body=emb_body([[1.0, 0.0]])),
    ]
    monkeypatch.setattr(embed_mod, "BATCH", 2)
    emb = OpenAICompatEmbedder("e-model", server.url, "sk-e", sleep=lambda s: None)
    out = emb.embed_documents(["a", "b", "c"])
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]], atol=1e-6)
    assert emb.dimensions == 2
    assert [s.body["input"] for s in server.seen] == [["a", "b"], ["c"]]
    assert server.seen[0].path == "/v1/embeddings" and server.seen[0].body["model"] == "e-model"
    assert "dimensions" not in server.seen[0].body

    server.script = [Reply(body=emb_body([[1.0, 0.0, 0.0]]))]
    with pytest.raises(EmbedderError, match="got 3-d vectors, expected 2"):
        emb.embed_query("d")


def test_embedder_dimensions_probe_and_retry(server: Server) -> None:
    server.script = [Reply(429, "later", {"Retry-After": "1"}), Reply(body=emb_body([[1.0, 1.0, 1.0]]))]
    sleeps: list[float] = []
    emb = OpenAICompatEmbedder("e", server.url, "", sleep=sleeps.append)
    assert emb.dimensions == 3
    assert sleeps == [1.0]
    assert server.seen[-1].body["input"] == ["dimension probe"]


def test_embedder_errors(server: Server) -> None:
    server.script = [Reply(401, {"error": {"message": "bad key"}})]
    with pytest.raises(EmbedderError, match="check AMEM_EMBEDDER_API_KEY"):
        OpenAICompatEmbedder("e", server.url, "x").embed_query("a")
    server.script = [Reply(500, "down")] * 2
    with pytest.raises(EmbedderError, match="HTTP 500 after 2"):
        OpenAICompatEmbedder("e", server.url, "x", max_retries=1, sleep=lambda s: None).embed_query("a")
    server.script = [Reply(body=emb_body([[1.0, 0.0]]))]
    OpenAICompatEmbedder("e", server.url, "x", dimensions=2).embed_query("a")
    assert server.seen[-1].body["dimensions"] == 2


def test_a_drip_fed_embedding_is_given_up_at_the_timeout(server: Server) -> None:
    body = emb_body([[1.0, 0.0]])
    server.default = Reply(body=body, drip=0.05)  # ~60 bytes: 3 s in all, 50 ms per read
    emb = OpenAICompatEmbedder("e", server.url, "", timeout=0.3, max_retries=0, sleep=lambda s: None)
    start = time.monotonic()
    with pytest.raises(EmbedderError, match="timed out"):
        emb.embed_query("a")
    assert time.monotonic() - start < 1.5
