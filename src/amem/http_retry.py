"""Retry policy for remote model providers, kept at the provider edge so nothing above retries twice.

Transient failures (connection errors, timeouts, 408/409/429/5xx) are retried with exponential backoff and
jitter, honouring ``Retry-After``; everything else is returned to the caller to interpret.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .errors import AmemError

Sleep = Callable[[float], None]
ASleep = Callable[[float], Awaitable[None]]

RETRY_STATUS = frozenset({408, 409, 429})
BASE_DELAY = 0.5
MAX_DELAY = 30.0
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def is_retryable(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (delta-seconds or HTTP-date form), capped at MAX_DELAY."""
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), MAX_DELAY)


def backoff(attempt: int, base: float = BASE_DELAY) -> float:
    """Delay before retry number ``attempt`` (0-based): doubling, with jitter so clients do not sync up."""
    return float(min(MAX_DELAY, base * 2**attempt) * random.uniform(0.5, 1.5))


def post_with_retry(
    client: httpx.Client,
    url: str,
    payload: dict[str, Any],
    *,
    max_retries: int,
    error: type[AmemError],
    what: str,
    sleep: Sleep = time.sleep,
    base_delay: float = BASE_DELAY,
    deadline: float | None = None,
) -> httpx.Response:
    """POST ``payload`` as JSON; returns the first non-retryable response.

    Raises ``error`` once ``max_retries`` retries (after the first attempt) are spent on transient failures.
    ``base_delay`` is the first backoff (seconds); a ``Retry-After`` from the server replaces it.
    ``deadline`` bounds each attempt as a whole: httpx's timeouts are per read, so a server that drips
    its answer a byte at a time would otherwise hold the caller far past the timeout it configured.
    """
    attempts = max_retries + 1
    for attempt in range(attempts):
        try:
            response = _post(client, url, payload, deadline)
        except _TRANSIENT as exc:
            sleep(_after_failure(exc, attempt, attempts, base_delay, error, what, url))
            continue
        wait = _after_response(response, attempt, attempts, base_delay, error, what, url)
        if wait is None:
            return response
        sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


async def apost_with_retry(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    max_retries: int,
    error: type[AmemError],
    what: str,
    sleep: ASleep,
    base_delay: float = BASE_DELAY,
    deadline: float | None = None,
) -> httpx.Response:
    """``post_with_retry`` for async callers: the same policy, waiting without holding a thread."""
    attempts = max_retries + 1
    for attempt in range(attempts):
        try:
            response = await _apost(client, url, payload, deadline)
        except _TRANSIENT as exc:
            await sleep(_after_failure(exc, attempt, attempts, base_delay, error, what, url))
            continue
        wait = _after_response(response, attempt, attempts, base_delay, error, what, url)
        if wait is None:
            return response
        await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _after_failure(
    exc: Exception, attempt: int, attempts: int, base: float, error: type[AmemError], what: str, url: str
) -> float:
    """The delay before the next attempt after a transport failure; raises ``error`` after the last."""
    if attempt == attempts - 1:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not connect"
        raise error(
            f"{what}: {kind} ({type(exc).__name__}: {exc}) after {attempts} attempt(s) to {url}; "
            "check that the server is up and the base URL is right, or raise the timeout"
        ) from exc
    return backoff(attempt, base)


def _after_response(
    response: httpx.Response,
    attempt: int,
    attempts: int,
    base: float,
    error: type[AmemError],
    what: str,
    url: str,
) -> float | None:
    """None: return this response. Else the delay before retrying it; raises ``error`` after the last."""
    if not is_retryable(response.status_code):
        return None
    if attempt == attempts - 1:
        raise error(
            f"{what}: HTTP {response.status_code} after {attempts} attempt(s) from {url}: "
            f"{body_tail(response)}; the service is overloaded or failing - retry later"
        )
    wait = retry_after(response)
    return backoff(attempt, base) if wait is None else wait


def _post(client: httpx.Client, url: str, payload: dict[str, Any], deadline: float | None) -> httpx.Response:
    """One POST, its body read in full; a ReadTimeout when the whole exchange outlasts ``deadline``."""
    if deadline is None:
        return client.post(url, json=payload)
    give_up = time.monotonic() + deadline
    with client.stream("POST", url, json=payload) as response:
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if time.monotonic() > give_up:
                raise httpx.ReadTimeout(
                    f"no complete answer within {deadline:g} s ({len(body)} bytes so far)",
                    request=response.request,
                )
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=response.request
    )


async def _apost(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], deadline: float | None
) -> httpx.Response:
    if deadline is None:
        return await client.post(url, json=payload)
    give_up = time.monotonic() + deadline
    async with client.stream("POST", url, json=payload) as response:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if time.monotonic() > give_up:
                raise httpx.ReadTimeout(
                    f"no complete answer within {deadline:g} s ({len(body)} bytes so far)",
                    request=response.request,
                )
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(body), request=response.request
    )


def body_tail(response: httpx.Response, limit: int = 300) -> str:
    """The useful part of an error body for messages: OpenAI-style ``error.message`` when present."""
    try:
        text = response.text.strip()
    except (httpx.HTTPError, UnicodeDecodeError):
        return "<unreadable body>"
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        err = data["error"]
        text = str(err.get("message") or err) if isinstance(err, dict) else str(err)
    return text if len(text) <= limit else text[:limit] + "..."
