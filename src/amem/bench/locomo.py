"""`amem bench locomo`: every method on the same questions, scored by category, with cost.

The system never sees a question's category, answer or evidence: retrieval and answering get the
question text only; the gold fields are used afterwards, for scoring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import locomo, present
from ..llm.base import LLM
from ..llm.runner import CallFailed, LLMRunner
from ..memory import Memory
from ..notes import Note, Scope, SearchHit
from ..prompts import answer as answer_prompt
from ..prompts import judge as judge_prompt
from ..steps.retrieve import approx_tokens
from ..store import Filters
from . import metrics, tokens
from .methods import DERIVED, METHODS, Method

CATEGORIES = ("1", "2", "3", "4", "5")
INGEST_STEPS = frozenset({"construct", "construct_batch", "construct_episode", "analyse", "evolve", "repair"})
Progress = Callable[[int, int], None]


@dataclass
class EvalOptions:
    ks: tuple[int, ...] = (5, 10, 20)
    answer_k: int = 10
    token_budget: int = 1200
    max_questions: int | None = None
    answer_llm: LLM | None = None
    judge_llm: LLM | None = None
    #: methods whose answers are generated (None: all); answering costs ~1 LLM call per question
    answer_methods: frozenset[str] | None = None
    #: retrieval preset for the amem methods, instead of each method's own
    preset: str | None = None
    #: also evaluate every method on a consolidated copy of its store ("<method>+consolidated")
    consolidate: bool = False
    #: the k of the recall-against-tokens curve
    curve_ks: tuple[int, ...] = tokens.CURVE_KS

    def answers(self, method: str) -> bool:
        return self.answer_llm is not None and (self.answer_methods is None or method in self.answer_methods)


@dataclass
class MethodRun:
    method: Method
    records: list[dict[str, Any]] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)


def note_line(note: Note, with_context: bool) -> str:
    """The line an agent is shown (``present.line``): with the context, or the content alone."""
    return present.line(note, "full" if with_context else "content")


def retrieve(
    memory: Memory, method: Method, question: str, k: int, budget: int, filters: Filters | None
) -> list[SearchHit]:
    return memory.search(
        question,
        k=k,
        filters=filters,
        preset=method.preset,
        expand=method.expand,
        token_budget=budget if method.expand else None,
        track=False,  # the benchmark reads; its questions must not change retrieval counts or links
    )


def dia_ids(notes: Sequence[Note]) -> list[str]:
    seen: dict[str, None] = {}
    for note in notes:
        for meta in note.all_metadata():  # a merged note stands for every turn folded into it
            if "dia_id" in meta:
                seen.setdefault(str(meta["dia_id"]), None)
    return list(seen)


def evaluate_conversation(
    memory: Memory,
    run: MethodRun,
    conv: locomo.Conversation,
    opts: EvalOptions,
    runner: LLMRunner | None,
    progress: Progress | None = None,
    horizon: datetime | None = None,
    judge: LLMRunner | None = None,
) -> None:
    """Score every question of ``conv``; with a horizon, every method sees only the turns before it."""
    method = run.method
    filters = Filters(event_before=horizon) if horizon else None
    all_notes = sorted(
        (n for n in memory.store.iter_notes(memory.scope) if horizon is None or n.event_time < horizon),
        key=lambda n: (n.event_time, n.ingest_time),
    )
    speakers = " and ".join(s for s in conv.speakers if s) or "two people"
    questions = conv.qa[: opts.max_questions] if opts.max_questions else conv.qa
    with_context = method.store != "raw"
    ks = sorted(set(opts.ks) | (set(opts.curve_ks) if method.preset != "all" else set()))
    for i, qa in enumerate(questions, start=1):
        question = str(qa.get("question", ""))
        category = int(qa.get("category", 0))
        evidence = metrics.evidence_ids(qa.get("evidence", []))
        record: dict[str, Any] = {
            "method": method.name,
            "conversation": conv.sample_id,
            "qid": i,
            "question": question,
            "category": category,
            "evidence": sorted(evidence),
        }
        answer_notes: list[Note] = []
        curve: dict[str, list[Any]] = {}
        for k in ks:
            if method.preset == "all":
                found = all_notes
            else:
                start = time.perf_counter()
                hits = retrieve(memory, method, question, k, opts.token_budget, filters)
                elapsed = (time.perf_counter() - start) * 1000
                if k == opts.answer_k:
                    run.search_ms.append(elapsed)
                found = [h.note for h in hits]
            ids = dia_ids(found)
            found_recall = metrics.recall(ids, evidence)
            if k in opts.ks:
                record[f"retrieved@{k}"] = ids
                record[f"recall@{k}"] = found_recall
            if k in opts.curve_ks and method.preset != "all":
                curve[str(k)] = [found_recall, _tokens(found, with_context), _tokens(found, False)]
            if k == opts.answer_k:
                answer_notes = found
                record["all_found"] = None if not evidence else evidence <= set(ids)
        if curve:
            record["curve"] = curve
        if method.name in tokens.MATCHED and method.preset != "all":
            hits = retrieve(memory, method, question, tokens.MATCH_K, opts.token_budget, filters)
            record["ranked"] = [[dia_ids([h.note]), len(note_line(h.note, False))] for h in hits]
        if with_context:
            record["bare_tokens"] = _tokens(answer_notes, False)
        lines = [note_line(n, with_context) for n in answer_notes]
        record["context_tokens"] = approx_tokens("\n".join(lines)) if lines else 0
        if runner is not None:
            record |= _answer(runner, speakers, lines, question, category, qa)
            if judge is not None:
                record["judge"] = (
                    record["f1"]
                    if category == 5
                    else _judge(judge, question, qa.get("answer", ""), record["answer"])
                )
        run.records.append(record)
        if progress:
            progress(i, len(questions))


def _tokens(notes: Sequence[Note], with_context: bool) -> int:
    return tokens.tokens_of(tokens.lines_chars([note_line(n, with_context) for n in notes]))


def _answer(
    runner: LLMRunner, speakers: str, lines: list[str], question: str, category: int, qa: dict[str, Any]
) -> dict[str, Any]:
    prompt = answer_prompt.render(speakers, lines, question)
    try:
        out, call = runner.run(prompt, [])
        text = out.answer
    except CallFailed as exc:
        text, call = "", exc.call
    gold = qa.get("answer", "")
    return {
        "answer": text,
        "gold": gold if category != 5 else None,
        "answer_tokens_in": call.input_tokens,
        "answer_ms": call.latency_ms,
        **metrics.answer_scores(category, text, gold),
    }


def _judge(judge: LLMRunner, question: str, gold: Any, candidate: str) -> float | None:
    try:
        out, _ = judge.run(judge_prompt.render(question, str(gold), candidate), [])
    except CallFailed:
        return None  # an unusable verdict is left out of the mean, not counted as wrong
    return float(out.correct)


def by_category(records: Sequence[dict[str, Any]], key: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for cat in CATEGORIES:
        out[cat] = metrics.mean(_num(r.get(key)) for r in records if str(r["category"]) == cat)
    out["overall"] = metrics.mean(_num(r.get(key)) for r in records if str(r["category"]) in "1234")
    return out


def _num(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


def ingestion_cost(memory: Memory, conversations: Sequence[str]) -> dict[str, float | None]:
    """LLM calls, tokens and LLM seconds per ingested turn, from the recorded (uncached) calls."""
    ids = {n.id for conv in conversations for n in memory.store.iter_notes(Scope(user_id=conv))}
    turns = len(ids)
    if not turns:
        return {"llm_calls_per_turn": None, "llm_tokens_per_turn": None, "seconds_per_turn": None}
    calls = memory.store.llm_calls(limit=10**9)
    # a call belongs to the conversation of the note it was made for (the first id it names)
    mine = [
        c
        for c in calls
        if c.step in INGEST_STEPS and not c.cached and c.note_ids[:1] and c.note_ids[0] in ids
    ]
    return {
        "llm_calls_per_turn": len(mine) / turns,
        "llm_tokens_per_turn": sum(c.input_tokens + c.output_tokens for c in mine) / turns,
        "seconds_per_turn": sum(c.latency_ms for c in mine) / 1000 / turns,
    }


def summarise(run: MethodRun, cost: dict[str, float | None], answered: bool) -> dict[str, Any]:
    recs = run.records
    out: dict[str, Any] = {f"recall@{k}": by_category(recs, f"recall@{k}") for k in _ks(recs)}
    out["all_found@10"] = by_category(recs, "all_found")
    if answered:
        out["f1"] = by_category(recs, "f1")
        out["bleu1"] = by_category(recs, "bleu1")
    if any("judge" in r for r in recs):
        out["judge"] = by_category(recs, "judge")
    out["context_tokens"] = metrics.mean(r["context_tokens"] for r in recs)
    if any("bare_tokens" in r for r in recs):
        out["bare_tokens"] = metrics.mean(r.get("bare_tokens") for r in recs)
    if any("curve" in r for r in recs):
        out["curve"] = tokens.curve(recs, run.method.name)
    out |= cost
    out["search_p50_ms"] = metrics.percentile(run.search_ms, 0.5)
    out["search_p95_ms"] = metrics.percentile(run.search_ms, 0.95)
    out["questions"] = len(recs)
    return out


def _ks(records: Sequence[dict[str, Any]]) -> list[int]:
    if not records:
        return []
    return sorted(int(key.split("@")[1]) for key in records[0] if key.startswith("recall@"))


def method_list(names: Sequence[str]) -> list[Method]:
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        from ..errors import InvalidInput

        raise InvalidInput(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    return [METHODS[n] for n in names]


def run_locomo(
    out: Path,
    settings: Any,
    data: Path,
    conversation_ids: Sequence[str],
    method_names: Sequence[str],
    opts: EvalOptions,
    max_turns: int | None = None,
    batch_size: int = 1,
    commit: str | None = None,
    bar: Any = None,
    max_sessions: int | None = None,
    compare: dict[str, Path] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ingest what is missing, evaluate every method, and return (records, summary). ``compare``: stores
    built elsewhere (label -> file), evaluated beside this run's methods on the same questions."""
    from .methods import COMPARED, compared_methods, copy_compared, ingest, open_memory

    conversations = [c for c in locomo.load(data) if not conversation_ids or c.sample_id in conversation_ids]
    ids = [c.sample_id for c in conversations]
    methods = method_list(method_names)
    if any(m.store != "raw" for m in methods):  # every amem figure sits next to baselines at its tokens
        methods = [METHODS[b] for b in tokens.MATCHED if b not in method_names] + methods
    if opts.preset:
        methods = [replace(m, preset=opts.preset) if m.store != "raw" else m for m in methods]
    stores = list(dict.fromkeys(m.store for m in methods))
    ingest(out, stores, settings, data, ids, max_turns, batch_size, bar, max_sessions)
    for label, path in (compare or {}).items():
        copy_compared(out, label, path, settings)
        methods += compared_methods(label)
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    consolidation: dict[str, Any] = {}
    if opts.consolidate:
        from .methods import CONSOLIDATED, consolidated_copy

        consolidation = {s: consolidated_copy(out, s, settings) for s in stores if s not in DERIVED}
        methods += [
            replace(m, name=m.name + CONSOLIDATED, store=m.store + CONSOLIDATED)
            for m in list(methods)
            if m.store not in DERIVED and not m.store.startswith(COMPARED)
        ]
    audits: dict[str, dict[str, Any]] = {}  # store -> conversation -> audit (several methods share one)
    for method in methods:
        run = MethodRun(method)
        with open_memory(out, method.store, settings) as memory:
            if method.store != "raw" and method.store not in audits:
                audits[method.store] = {
                    c.sample_id: memory.scoped(user_id=c.sample_id).audit().model_dump()
                    for c in conversations
                }
            runner = _runner(opts.answer_llm, memory) if opts.answers(method.name) else None
            judge = _runner(opts.judge_llm, memory) if runner is not None else None
            for conv in conversations:
                scoped = memory.scoped(user_id=conv.sample_id)
                cut, horizon = locomo.truncate(conv, max_sessions, max_turns)
                if bar is None:
                    evaluate_conversation(scoped, run, cut, opts, runner, horizon=horizon, judge=judge)
                else:
                    total = min(len(cut.qa), opts.max_questions or len(cut.qa))
                    with bar(f"{method.name} {conv.sample_id}", total) as progress:
                        evaluate_conversation(scoped, run, cut, opts, runner, progress, horizon, judge)
            cost = ingestion_cost(memory, ids) if method.store != "raw" else _no_cost()
        summary[method.name] = summarise(run, cost, runner is not None)
        if method.store in audits:
            summary[method.name]["audit"] = audits[method.store]
        records.extend(run.records)
    for method in methods:
        if method.store != "raw" and (matched := tokens.equal_tokens(records, method.name)):
            summary[method.name]["equal_tokens"] = matched
    summary["run"] = {
        "data": str(data),
        "conversations": ids,
        "questions": len(records) // max(1, len(methods)),
        "llm": settings.llm,
        "embedder": settings.embedder,
        "answer_llm": getattr(opts.answer_llm, "model_id", None),
        "answer_methods": [m.name for m in methods if opts.answers(m.name)],
        "judge_llm": getattr(opts.judge_llm, "model_id", None),
        "ks": list(opts.ks),
        "token_budget": opts.token_budget,
        "presets": {m.name: m.preset for m in methods},
        "max_turns": max_turns,
        "max_sessions": max_sessions,
        "batch_size": batch_size,
        "commit": commit,
        "consolidation": consolidation,
        "compared": {label: str(path) for label, path in (compare or {}).items()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    return records, summary


def _runner(llm: LLM | None, memory: Memory) -> LLMRunner | None:
    """Answer and judge calls are recorded and cached in the method's own store."""
    if llm is None:
        return None
    store = memory.store
    return LLMRunner(llm, store.record_llm_call, store.cache_get, store.cache_put)


def _no_cost() -> dict[str, float | None]:
    return {"llm_calls_per_turn": 0.0, "llm_tokens_per_turn": 0.0, "seconds_per_turn": 0.0}
