"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio, ...).

Servers differ in what they accept, so the provider adapts once per instance instead of failing: structured
output falls back from ``json_schema`` to ``json_object`` to nothing, and OpenAI's newer parameter names are
used when the server asks for them. Transient failures are retried in ``http_retry``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from ..errors import LLMOutputError, LLMUnavailable
from ..http_retry import BASE_DELAY, Sleep, body_tail, post_with_retry
from .base import Completion, Message, Usage

#: Structured-output modes, strongest first; a 400 about response_format moves one step down.
_FORMATS = ("json_schema", "json_object", "none")


class OpenAICompatLLM:
    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str,
        timeout: float = 120,
        max_retries: int = 3,
        supports_schema: bool = True,
        sleep: Sleep = time.sleep,
        retry_base: float = BASE_DELAY,
    ) -> None:
        self.model = model
        self.model_id = f"openai:{model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.timeout = timeout
        self._sleep = sleep
        #: Current structured-output mode; ``supports_schema`` is true only while it is json_schema.
        self._format = "json_schema" if supports_schema else "json_object"
        self.supports_schema = supports_schema
        self._max_tokens_key = "max_tokens"
        self._send_temperature = True
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def close(self) -> None:
        self._client.close()

    def _payload(
        self, messages: list[Message], schema: dict[str, Any] | None, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            self._max_tokens_key: max_tokens,
        }
        if self._send_temperature:
            payload["temperature"] = temperature
        if schema is not None and self._format == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": False},
            }
        elif schema is not None and self._format == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _adapt(self, response: httpx.Response, payload: dict[str, Any]) -> bool:
        """After a 400, change what we send if the server said which part it dislikes; True if changed."""
        text = response.text.lower()
        if "response_format" in payload and ("response_format" in text or "json_schema" in text):
            self._format = _FORMATS[_FORMATS.index(self._format) + 1]
            self.supports_schema = False
            return True
        if self._max_tokens_key == "max_tokens" and "max_completion_tokens" in text:
            self._max_tokens_key = "max_completion_tokens"
            return True
        if self._send_temperature and "temperature" in text:
            self._send_temperature = False
            return True
        return False

    def complete(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> Completion:
        for _ in range(len(_FORMATS) + 2):  # bounded: each adaptation can happen once
            payload = self._payload(messages, schema, max_tokens, temperature)
            response = post_with_retry(
                self._client,
                self.url,
                payload,
                max_retries=self.max_retries,
                error=LLMUnavailable,
                what=f"LLM {self.model_id}",
                sleep=self._sleep,
                base_delay=self.retry_base,
                deadline=self.timeout,
            )
            if response.status_code == 400 and self._adapt(response, payload):
                continue
            break
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> Completion:
        status = response.status_code
        if status in (401, 403):
            raise LLMUnavailable(
                f"LLM {self.model_id}: HTTP {status} ({body_tail(response)}); check AMEM_LLM_API_KEY"
            )
        if status == 404:
            raise LLMUnavailable(
                f"LLM {self.model_id}: HTTP 404 from {self.url} ({body_tail(response)}); "
                "check AMEM_LLM_BASE_URL and the model name"
            )
        if status >= 400:
            raise LLMUnavailable(f"LLM {self.model_id}: HTTP {status}: {body_tail(response)}")
        try:
            data = response.json()
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMUnavailable(
                f"LLM {self.model_id}: not an OpenAI chat completion response: {body_tail(response)}"
            ) from exc
        text = message.get("content") if isinstance(message, dict) else None
        if not text:
            refusal = message.get("refusal") if isinstance(message, dict) else None
            reason = f"refused: {refusal}" if refusal else "empty answer"
            raise LLMOutputError(f"LLM {self.model_id}: {reason}")
        usage = data.get("usage") or {}
        return Completion(
            text=str(text),
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
            model=f"openai:{data.get('model') or self.model}",  # the server's exact version when it says
        )
