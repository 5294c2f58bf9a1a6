"""`amem bench ...` commands (registered on the main CLI)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..config import Settings
from ..render import progress_bar
from .methods import METHODS

METHOD_NAMES = tuple(METHODS)


@click.group(name="bench")
def bench() -> None:
    """Benchmarks with measured numbers (see BENCHMARKS.md for published runs)."""


@bench.command(name="scale")
@click.option(
    "--notes", "sizes", type=click.IntRange(min=10), multiple=True, help="Note counts (repeatable)."
)
@click.option(
    "--embedder",
    "bench_embedder",
    default="fake:384",
    show_default=True,
    help="Embedder for the synthetic notes (e.g. local:all-minilm-l6-v2).",
)
@click.option("--queries", type=click.IntRange(min=10), default=200, show_default=True)
@click.option(
    "--postgres",
    default=None,
    help="Also run each size on this PostgreSQL server (URL; a database amem_bench_N is created per size).",
)
@click.option(
    "--citus",
    default=None,
    help="Many users on this Citus database (coordinator URL; amem's tables in it are dropped first), "
    "next to --postgres when given, instead of the sizes.",
)
@click.option(
    "--users",
    "user_steps",
    type=click.IntRange(min=1),
    multiple=True,
    help="With --citus: measure after loading this many users (repeatable) [default 100, 1000].",
)
@click.option("--notes-per-user", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the stores and results [default <home>/bench/scale].",
)
@click.pass_obj
def scale(
    obj: Any,
    sizes: tuple[int, ...],
    bench_embedder: str,
    queries: int,
    postgres: str | None,
    citus: str | None,
    user_steps: tuple[int, ...],
    notes_per_user: int,
    out: Path | None,
) -> None:
    """Add throughput, search p50/p95 per preset, DB size and RAM per note at each size (no LLM); with
    --citus, the same per user as users grow, on Citus and single-node PostgreSQL."""
    from .scale import markdown, run_size

    settings: Settings = replace(obj.settings, embedder=bench_embedder)
    folder = out or settings.home / "bench" / "scale"
    if citus:
        _scale_users(
            settings, folder, citus, postgres, sorted(set(user_steps or (100, 1000))), notes_per_user, queries
        )
        return
    rows = []
    for n in sizes or (10_000,):
        with progress_bar(f"{n:,} notes, sqlite", n) as progress:
            rows.append(run_size(settings, folder / f"n{n}", n, queries=queries, progress=progress))
        if postgres:
            with progress_bar(f"{n:,} notes, postgresql", n) as progress:
                rows.append(
                    run_size(
                        settings, folder / f"pg{n}", n, queries=queries, progress=progress, postgres=postgres
                    )
                )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (folder / "results.md").write_text(table + "\n")
    click.echo(table)
    click.echo(f"\nresults in {folder}", err=True)


def _scale_users(
    settings: Settings,
    folder: Path,
    citus: str,
    postgres: str | None,
    steps: list[int],
    per_user: int,
    queries: int,
) -> None:
    from ..store.postgres_schema import fresh_database
    from .scale_users import empty_citus, markdown, run_store

    stores = [("postgresql", fresh_database(postgres, "amem_bench_users"))] if postgres else []
    stores.append(("citus", empty_citus(citus)))
    # the stores side by side, step by step; the results are written after every step
    runs = [run_store(settings, url, label, steps, per_user, queries=queries) for label, url in stores]
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for step in steps:
        for (label, _), run in zip(stores, runs, strict=True):
            click.echo(f"{label}: loading up to {step:,} users of {per_user:,} notes", err=True)
            rows.append(next(run))
            (folder / "users.json").write_text(json.dumps(rows, indent=2))
            (folder / "users.md").write_text(markdown(rows) + "\n")
    for run in runs:
        run.close()
    click.echo(markdown(rows))
    click.echo(f"\nresults in {folder}", err=True)


@bench.command(name="faults")
@click.option(
    "--kills", type=click.IntRange(min=1), default=20, show_default=True, help="SIGKILLs per store."
)
@click.option("--crash-notes", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--processes", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--load-ops", type=click.IntRange(min=1), default=40, show_default=True, help="Per worker.")
@click.option("--provider-notes", type=click.IntRange(min=4, max=100), default=60, show_default=True)
@click.option(
    "--rate", type=click.FloatRange(0.01, 1.0), default=0.5, show_default=True, help="Provider fault rate."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--postgres",
    default=None,
    help="Also run on this PostgreSQL server (URL; databases amem_faults_* are created per scenario).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the stores and results [default <home>/bench/faults].",
)
@click.pass_obj
def faults(
    obj: Any,
    kills: int,
    crash_notes: int,
    threads: int,
    processes: int,
    load_ops: int,
    provider_notes: int,
    rate: float,
    seed: int,
    postgres: str | None,
    out: Path | None,
) -> None:
    """Inject every fault of RELIABILITY.md (SIGKILLs, concurrent writers, a failing LLM provider) and
    report what was lost; exits 1 if anything was. Uses the fake LLM and embedder: it tests amem."""
    from .faults import Plan, markdown, run_all

    plan = Plan(kills, crash_notes, threads, processes, load_ops, provider_notes, rate, seed)
    folder = out or obj.settings.home / "bench" / "faults"
    rows = run_all(plan, folder, postgres, lambda line: click.echo(line, err=True))
    table = markdown(rows)
    (folder / "results.md").write_text(table + "\n")
    click.echo(table)
    click.echo(f"\nresults in {folder}", err=True)
    if not all(r.ok for r in rows):
        raise SystemExit(1)


def _data_option(help: str) -> Any:
    return click.option(
        "--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help=help
    )


@bench.command(name="runtime")
@_data_option("A LoCoMo-format JSON file (its turns make the prompts).")
@click.option("--conversation", default=None, help="Sample id [default: the first].")
@click.option(
    "--calls", type=click.IntRange(min=1), default=12, show_default=True, help="Prompts per setting."
)
@click.option(
    "--settings",
    "specs",
    default="llama-cpp,xllamacpp,xllamacpp:2",
    show_default=True,
    help="Comma-separated RUNTIME[+free][:PARALLEL[:THREADS]] settings, run one after the other "
    "(+free: no JSON schema, the answer read by the tolerant parser).",
)
@click.option("--model", default="qwen2.5-coder-1.5b", show_default=True, help="Local model name.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_obj
def runtime_cmd(
    obj: Any, data: Path, conversation: str | None, calls: int, specs: str, model: str, as_json: bool
) -> None:
    """Local LLM runtimes (and parallel slots) side by side on the same construct prompts."""
    from . import runtime

    settings: list[runtime.Setting] = []
    for spec in (s.strip() for s in specs.split(",") if s.strip()):
        try:
            settings.append(runtime.Setting.parse(spec))
        except (TypeError, ValueError):
            raise click.BadParameter(
                f"{spec!r}: use RUNTIME[+free][:PARALLEL[:THREADS]]", param_hint="--settings"
            ) from None
    batch = runtime.prompts(data, conversation, calls)
    rows = [r.row() for r in runtime.run(settings, batch, model, obj.settings.models_dir)]
    click.echo(json.dumps(rows, indent=2) if as_json else runtime.markdown(rows))


@bench.command(name="background")
@_data_option("A LoCoMo-format JSON file (its turns are added).")
@click.option("--conversation", default=None, help="Sample id [default: the first].")
@click.option("--turns", type=click.IntRange(min=3), default=40, show_default=True)
@click.option("--pause", type=float, default=0.2, show_default=True, help="Seconds between two adds.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_obj
def background_cmd(
    obj: Any, data: Path, conversation: str | None, turns: int, pause: float, as_json: bool
) -> None:
    """Add latency while the background worker keeps the LLM busy, next to adds with no LLM."""
    from . import background

    rows = background.run(obj.settings, data, conversation, turns, pause)
    click.echo(json.dumps(rows, indent=2) if as_json else background.markdown(rows))


@bench.command(name="serve")
@_data_option(
    "A LoCoMo-format JSON file (its turns are the memory and the batch, its questions the queries)."
)
@click.option("--conversation", default=None, help="Sample id [default: the first].")
@click.option(
    "--preload", type=click.IntRange(min=1), default=200, show_default=True, help="Turns stored first."
)
@click.option("--batch", type=click.IntRange(min=1), default=20, show_default=True, help="Turns in the job.")
@click.option(
    "--clients", type=click.IntRange(min=1), default=50, show_default=True, help="Searches at once."
)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_obj
def serve_cmd(
    obj: Any,
    data: Path,
    conversation: str | None,
    preload: int,
    batch: int,
    clients: int,
    rounds: int,
    as_json: bool,
) -> None:
    """Search latency of `amem serve` under concurrent searches, idle and while a batch job enriches."""
    from . import serving

    rows = serving.run(obj.settings, data, conversation, preload, batch, clients, rounds)
    click.echo(json.dumps(rows, indent=2) if as_json else serving.markdown(rows))


@bench.command(name="concurrency")
@click.option("--levels", default="1,4,16", show_default=True, help="Comma-separated llm_concurrency values.")
@click.option("--scopes", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--notes", "per_scope", type=click.IntRange(min=1), default=4, show_default=True, help="Per scope."
)
@click.option("--latency", type=float, default=0.5, show_default=True, help="Seconds per served call.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_obj
def concurrency_cmd(
    obj: Any, levels: str, scopes: int, per_scope: int, latency: float, as_json: bool
) -> None:
    """Notes per second against a served model (a local fake with a fixed latency), by llm_concurrency."""
    from . import concurrency

    try:
        values = [int(v) for v in levels.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("use comma-separated integers, e.g. 1,4,16", param_hint="--levels") from None
    rows = concurrency.run(obj.settings, values, scopes, per_scope, latency)
    click.echo(json.dumps(rows, indent=2) if as_json else concurrency.markdown(rows, latency))


@bench.command(name="locomo")
@_data_option("A LoCoMo-format JSON file.")
@click.option("--conversation", "conversations", multiple=True, help="Only these sample ids (repeatable).")
@click.option("--methods", default=",".join(METHOD_NAMES), show_default=True, help="Comma-separated methods.")
@click.option(
    "--max-turns",
    type=click.IntRange(min=1),
    default=None,
    help="Ingest at most this many turns per conversation (questions beyond them are skipped).",
)
@click.option(
    "--max-sessions",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N sessions of each conversation (every method sees the same turns).",
)
@click.option(
    "--preset",
    type=click.Choice(["hybrid", "paper", "keyword"]),
    default=None,
    help="Retrieval preset for the amem methods [default: hybrid; paper for amem_paper].",
)
@click.option("--max-questions", type=click.IntRange(min=1), default=None, help="Per conversation.")
@click.option(
    "--consolidate",
    is_flag=True,
    help="Also run every method on a consolidated copy of its store (`<method>+consolidated`).",
)
@click.option(
    "--k", "ks", default="5,10,20", show_default=True, help="Comma-separated k values for recall@k."
)
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=1200,
    show_default=True,
    help="Token budget for link expansion.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Turns per LLM call when ingesting.",
)
@click.option("--answer-llm", default=None, help="Answering model (provider:model); none: retrieval only.")
@click.option(
    "--answer-methods",
    default=None,
    help="Comma-separated methods to answer with --answer-llm [default: every method].",
)
@click.option(
    "--answer-context",
    type=click.IntRange(min=512),
    default=None,
    help="Context window of a local answering model [default: 32768 when full_context is answered].",
)
@click.option("--judge-llm", default=None, help="Optional LLM judge of the answers (provider:model).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for stores and results [default <home>/bench/locomo].",
)
@click.option("--name", default=None, help="Name of this run's result folder [default: a timestamp].")
@click.option(
    "--compare",
    "compared",
    multiple=True,
    metavar="LABEL=PATH",
    help="Also evaluate an amem store file built elsewhere (another commit or setting) as amem@LABEL "
    "and amem_no_links@LABEL, on the same questions (repeatable; the file is copied, never changed).",
)
@click.pass_obj
def locomo_cmd(
    obj: Any,
    data: Path,
    conversations: tuple[str, ...],
    methods: str,
    max_turns: int | None,
    max_sessions: int | None,
    max_questions: int | None,
    preset: str | None,
    consolidate: bool,
    ks: str,
    budget: int,
    batch_size: int,
    answer_llm: str | None,
    answer_methods: str | None,
    answer_context: int | None,
    judge_llm: str | None,
    out: Path | None,
    name: str | None,
    compared: tuple[str, ...],
) -> None:
    """Evidence recall, answer F1/BLEU-1 and cost on LoCoMo for amem and the baselines, in one run."""
    try:
        import matplotlib  # noqa: F401
        import snowballstemmer  # noqa: F401
    except ImportError:
        raise click.ClickException("the benchmark needs its extra: pip install 'amem[bench]'") from None
    from ..providers import make_llm
    from . import report
    from .locomo import EvalOptions, run_locomo

    settings: Settings = obj.settings
    try:
        k_values = tuple(sorted({int(k) for k in ks.split(",") if k.strip()}))
    except ValueError:
        raise click.BadParameter("use comma-separated integers, e.g. 5,10,20", param_hint="--k") from None
    answer_k = 10 if 10 in k_values else k_values[-1]
    method_names = [m.strip() for m in methods.split(",") if m.strip()]
    answered = (
        frozenset(m.strip() for m in answer_methods.split(",") if m.strip()) if answer_methods else None
    )
    if answered is not None and not answered <= set(method_names):
        raise click.BadParameter(
            f"{sorted(answered - set(method_names))} not among --methods", param_hint="--answer-methods"
        )
    if answer_context is None and "full_context" in (answered or method_names):
        # a whole conversation is ~15-30k tokens; the local models' context is 32k (the prefix is cached)
        answer_context = max(settings.llm_context, 32768)
    answer_settings = replace(settings, llm_context=answer_context or settings.llm_context)
    opts = EvalOptions(
        ks=k_values,
        answer_k=answer_k,
        token_budget=budget,
        max_questions=max_questions,
        answer_llm=make_llm(answer_llm, answer_settings) if answer_llm else None,
        judge_llm=make_llm(judge_llm, settings) if judge_llm else None,
        answer_methods=answered,
        preset=preset,
        consolidate=consolidate,
    )
    folder = out or settings.home / "bench" / "locomo"
    records, summary = run_locomo(
        folder,
        settings,
        data,
        conversations,
        method_names,
        opts,
        max_turns=max_turns,
        max_sessions=max_sessions,
        batch_size=batch_size,
        commit=_commit(),
        bar=progress_bar,
        compare=_compared(compared),
    )
    paths = report.write(folder / "results" / (name or time.strftime("%Y%m%d-%H%M%S")), records, summary)
    click.echo(report.markdown(summary))
    click.echo(f"\nresults: {paths['summary'].parent}", err=True)


def _compared(values: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path or not re.fullmatch(r"[A-Za-z0-9._-]+", label):
            raise click.BadParameter(
                f"{value!r}: use LABEL=PATH (label of letters, digits, . _ -)", param_hint="--compare"
            )
        if not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such store file", param_hint="--compare")
        out[label] = Path(path)
    return out


def _commit() -> str | None:
    """The git commit of the code that ran, when it runs from a checkout (recorded in the summary)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None
