"""A fault-injecting OpenAI-compatible LLM server on 127.0.0.1, for proving amem survives bad providers.

Each request to ``/v1/chat/completions`` draws one outcome from a seeded RNG: a fault kind at its set rate,
else a healthy answer. Healthy answers fill the request's ``response_format`` JSON schema from the prompt's
words (the fake LLM's filler), so they validate exactly as amem's prompts demand; a fault-free run enriches
everything. Every request is logged with its outcome and a digest of its body, so a run can tell a retry
(the same body again) from a new call and prove where retries happen (``amem.bench.provider_faults``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..llm.fake import schema_answer

#: Faults the transport sees: retried with backoff by ``http_retry`` (the provider edge).
TRANSPORT_FAULTS = ("timeout", "http_429", "http_500", "cut", "cut_body", "drip")
#: Faults in an HTTP 200 answer: the runner's one repair re-prompt is the only second attempt.
CONTENT_FAULTS = ("invalid_json", "bad_schema")
FAULTS = TRANSPORT_FAULTS + CONTENT_FAULTS
HEALTHY = "ok"


@dataclass(frozen=True)
class Served:
    """One request as the server saw it: what it did, and a digest of the body (equal bodies = a retry)."""

    outcome: str  # a fault kind, or HEALTHY
    digest: str

    @property
    def answered(self) -> bool:
        """The client got a complete HTTP 200 chat completion (healthy or with faulty content)."""
        return self.outcome == HEALTHY or self.outcome in CONTENT_FAULTS


def check_rates(rates: Mapping[str, float]) -> dict[str, float]:
    unknown = set(rates) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {dict(rates)}")
    return {kind: float(rates.get(kind, 0.0)) for kind in FAULTS}


class FlakyLLMServer:
    """``with FlakyLLMServer({"http_500": 0.3}, seed=1) as s:`` serves at ``s.url`` (an OpenAI base URL).

    ``hang`` is how long a ``timeout`` fault stalls before answering, and how long a ``drip`` fault takes
    to send its answer in 20 pieces, each gap well under the client's per-read timeout (set it past that);
    ``retry_after`` is the seconds a 429 asks the client to wait; ``latency`` delays every answer (requests
    are served side by side, as a batching server does). ``set_rates`` / ``heal`` change the rates
    while it runs. ``log`` holds every chat request in arrival order; ``faults`` counts injected faults.
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        *,
        hang: float = 2.0,
        retry_after: float = 0.05,
        model: str = "flaky",
        latency: float = 0.0,
    ) -> None:
        self.rates = check_rates(rates or {})
        self.latency = latency  # every answer takes this long, as a served model's decoding does
        self.hang = hang
        self.retry_after = retry_after
        self.model = model
        self.log: list[Served] = []
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        return len(self.log)

    def set_rates(self, rates: Mapping[str, float]) -> None:
        checked = check_rates(rates)
        with self._lock:
            self.rates = checked

    def heal(self) -> None:
        self.set_rates({})

    def __enter__(self) -> FlakyLLMServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wakes requests stalled by a timeout fault
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- one request -----------------------------------------------------------------------------
    def _draw(self, body: bytes) -> str:
        """The outcome of the next request, logged under the lock so the log is in arrival order."""
        with self._lock:
            u = self._rng.random()
            outcome = HEALTHY
            for kind in FAULTS:
                u -= self.rates[kind]
                if u < 0:
                    outcome = kind
                    break
            self.log.append(Served(outcome, hashlib.sha256(body).hexdigest()[:16]))
            if outcome != HEALTHY:
                self.faults[outcome] += 1
            return outcome

    def _variant(self, count: int) -> int:
        with self._lock:
            return self._rng.randrange(count)

    def content(self, request: dict[str, Any], outcome: str) -> str:
        """The assistant message for ``outcome``: schema-valid, unparseable, or parseable but invalid."""
        fmt = request.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
        messages = request.get("messages") or []
        prompt = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
        answer = schema_answer(prompt, schema)
        healthy = json.dumps(answer)
        if outcome == "invalid_json":
            return broken_json(healthy, self._variant(3))
        if outcome == "bad_schema":
            required = list((schema or {}).get("required") or answer)
            return json.dumps(schema_violation(answer, required, self._variant(3)))
        return healthy


def broken_json(healthy: str, variant: int) -> str:
    """Text no tolerant JSON reader can turn into an object: cut off, prose, or bare words as values."""
    if variant == 0:
        return healthy[: max(1, len(healthy) // 2)]
    if variant == 1:
        return "I'm sorry, I can't produce that format right now. The note is about several things."
    return '{"keywords": [memory, notes], "context": the note is about memory}'


def schema_violation(answer: Any, required: list[str], variant: int) -> dict[str, Any]:
    """Well-formed JSON that breaks the schema: required fields missing, emptied, or of the wrong type."""
    data = dict(answer) if isinstance(answer, dict) else {}
    if variant == 0:
        return {"status": "ok", **{k: v for k, v in data.items() if k not in required}}
    if variant == 1:
        return {k: ([] if isinstance(v, list) else "" if isinstance(v, str) else v) for k, v in data.items()}
    return {k: 7 for k in required} or {"status": 7}


def chat_completion(model: str, text: str, prompt_words: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-flaky-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_words,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_words + len(text.split()),
        },
    }


def _handler(server: FlakyLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers: a cut must not look like a close

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                self._send(400, {"error": {"message": "request body is not JSON"}})
                return
            outcome = server._draw(body)
            if server.latency:
                server._stopping.wait(server.latency)
            if outcome == "timeout":
                server._stopping.wait(server.hang)  # past the client's timeout: it has given up
                outcome = HEALTHY
            if outcome == "http_429":
                self._send(
                    429, {"error": {"message": "rate limited"}}, {"Retry-After": str(server.retry_after)}
                )
            elif outcome == "http_500":
                self._send(500, {"error": {"message": "internal error (injected)"}})
            elif outcome == "cut":
                self._cut()
            else:
                words = sum(len(str(m.get("content", "")).split()) for m in request.get("messages") or [])
                reply = chat_completion(server.model, server.content(request, outcome), words)
                self._send(200, reply, cut_body=outcome == "cut_body", drip=outcome == "drip")

        def _send(
            self,
            status: int,
            data: Any,
            headers: Mapping[str, str] | None = None,
            cut_body: bool = False,
            drip: bool = False,
        ) -> None:
            raw = json.dumps(data).encode()
            try:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if drip:  # a complete answer, but slower in total than any sane timeout
                    step = max(1, -(-len(raw) // 20))
                    for start in range(0, len(raw), step):
                        self.wfile.write(raw[start : start + step])
                        self.wfile.flush()
                        if server._stopping.wait(server.hang / 20):
                            break
                else:
                    self.wfile.write(raw[: len(raw) // 2] if cut_body else raw)
                    self.wfile.flush()
            except OSError:  # the client gave up (after a timeout fault)
                self.close_connection = True
                return
            if cut_body:
                self._cut()

        def _cut(self) -> None:
            """Drop the connection: no (more) bytes, then a close, as a crashed or restarted server does."""
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


__all__ = [
    "CONTENT_FAULTS",
    "FAULTS",
    "HEALTHY",
    "TRANSPORT_FAULTS",
    "FlakyLLMServer",
    "Served",
    "broken_json",
    "schema_violation",
]
