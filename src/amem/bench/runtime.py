"""`amem bench runtime`: local LLM runtimes side by side on the same prompts.

The prompts are the one-call construct prompts amem sends for the first turns of a LoCoMo conversation,
each with the turns before it as its related notes (as in a real write), so every runtime and setting
decodes exactly the same inputs with the same JSON schema. Reported per setting: seconds per call,
prompt and generated tokens, generated tokens per second of wall time, how many answers parse into the
step's typed output (through the tolerant parser a real write uses), and how many are word for word the
first setting's answer. A ``+free`` setting sends no JSON schema: unconstrained decoding, read by the
same parser, to weigh the grammar's cost against the answers it saves. With ``parallel`` > 1
the calls are sent that many at a time (xllamacpp decodes them in one batch): throughput is calls per
minute of wall time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import locomo
from ..llm.base import Completion
from ..llm.local import LocalLLM
from ..llm.runner import LLMRunner, Prompt
from ..notes import Note
from ..prompts import note
from ..prompts.common import Candidate

#: related notes offered with each prompt (the turns just before it)
NEIGHBOURS = 3


@dataclass
class Setting:
    runtime: str
    parallel: int = 1
    threads: int = 0
    constrained: bool = True  # False: no JSON schema sent; the answer is read by the tolerant parser

    @classmethod
    def parse(cls, spec: str) -> Setting:
        """``RUNTIME[+free][:PARALLEL[:THREADS]]``; ``+free`` decodes without the grammar."""
        name, *nums = spec.split(":")
        if len(nums) > 2:
            raise ValueError(f"{spec!r}: at most PARALLEL and THREADS after the runtime")
        numbers = [int(n) for n in nums] + [1, 0][len(nums) :]
        return cls(name.removesuffix("+free"), numbers[0], numbers[1], constrained=not name.endswith("+free"))

    @property
    def label(self) -> str:
        threads = f" ({self.threads} threads)" if self.threads else ""
        return f"{self.runtime}{'' if self.constrained else ' unconstrained'} x{self.parallel}{threads}"


@dataclass
class Result:
    setting: Setting
    wall_s: float = 0.0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    valid: int = 0
    same_as_first: int | None = None
    texts: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "setting": self.setting.label,
            "calls": self.calls,
            "wall_s": round(self.wall_s, 1),
            "s_per_call": round(self.wall_s / max(1, self.calls), 2),
            "calls_per_min": round(60 * self.calls / self.wall_s, 2) if self.wall_s else None,
            "input_tokens_per_call": round(self.input_tokens / max(1, self.calls)),
            "output_tokens_per_call": round(self.output_tokens / max(1, self.calls)),
            "generated_per_s": round(self.output_tokens / self.wall_s, 2) if self.wall_s else None,
            "valid": self.valid,
            "same_as_first": self.same_as_first,
        }


def prompts(data: Path, conversation: str | None, count: int) -> list[Prompt[Any]]:
    """Construct prompts for the first ``count`` turns, each with the turns before it as neighbours."""
    turns = locomo.pick(data, conversation).turns[:count]
    notes = [Note(content=t.content(), event_time=t.event_time) for t in turns]
    out: list[Prompt[Any]] = []
    for i, new in enumerate(notes):
        before = notes[max(0, i - NEIGHBOURS) : i]
        candidates = [Candidate(alias=f"N{j + 1}", note=n, similarity=0.5) for j, n in enumerate(before)]
        out.append(note.render(new, candidates, [c.alias for c in candidates[-1:]]))
    return out


def _valid(prompt: Prompt[Any], text: str) -> bool:
    try:
        LLMRunner._validate(prompt, text)  # the tolerant parser and typed output a real write uses
    except Exception:
        return False
    return True


def run(
    settings: Sequence[Setting], batch: Sequence[Prompt[Any]], model: str, models_dir: Path
) -> list[Result]:
    results: list[Result] = []
    for setting in settings:
        llm = LocalLLM(
            model, models_dir, n_threads=setting.threads, runtime=setting.runtime, parallel=setting.parallel
        )
        llm.complete(list(batch[0].messages), schema=batch[0].schema, max_tokens=8)  # load outside the clock
        result = Result(setting)

        def call(prompt: Prompt[Any], llm: LocalLLM = llm, schema: bool = setting.constrained) -> Completion:
            return llm.complete(
                list(prompt.messages), schema=prompt.schema if schema else None, max_tokens=prompt.max_tokens
            )

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=setting.parallel) as pool:
            completions = list(pool.map(call, batch))
        result.wall_s = time.perf_counter() - start
        for prompt, done in zip(batch, completions, strict=True):
            result.calls += 1
            result.input_tokens += done.usage.input_tokens
            result.output_tokens += done.usage.output_tokens
            result.valid += _valid(prompt, done.text)
            result.texts.append(done.text)
        if results:
            result.same_as_first = sum(a == b for a, b in zip(results[0].texts, result.texts, strict=True))
        results.append(result)
    return results


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| setting | calls | s/call | calls/min | prompt tokens/call | generated tokens/call | generated/s "
        "| valid | same as first |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['calls']} | {r['s_per_call']} | {r['calls_per_min']} | "
            f"{r['input_tokens_per_call']} | {r['output_tokens_per_call']} | {r['generated_per_s']} | "
            f"{r['valid']}/{r['calls']} | {'–' if r['same_as_first'] is None else r['same_as_first']} |"
        )
    return "\n".join(lines)
