"""Result files of a LoCoMo run: per-question records, the summary JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = ("1", "2", "3", "4")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(summary: dict[str, Any]) -> str:
    methods = {k: v for k, v in summary.items() if k != "run"}
    ks = sorted({int(key.split("@")[1]) for m in methods.values() for key in m if key.startswith("recall@")})
    head = ["method", *(f"R@{k}" for k in ks), "R@10 by cat 1/2/3/4", "R@10 cat 5", "all@10", "ctx tokens"]
    answered = any("f1" in m for m in methods.values())
    if answered:
        head += ["F1", "F1 by cat 1/2/3/4", "abstain cat 5", "BLEU-1", "judge"]
    head += ["calls/turn", "tokens/turn", "LLM s/turn", "search p50/p95 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in methods.items():
        r10 = m.get("recall@10", {})
        row = [name, *(_fmt(m.get(f"recall@{k}", {}).get("overall")) for k in ks)]
        row += [" / ".join(_fmt(r10.get(c), 2) for c in COLUMNS), _fmt(r10.get("5"), 2)]
        row += [_fmt(m.get("all_found@10", {}).get("overall"), 2), _fmt(m.get("context_tokens"), 0)]
        if answered:
            f1 = m.get("f1", {})
            row += [
                _fmt(f1.get("overall")),
                " / ".join(_fmt(f1.get(c), 2) for c in COLUMNS),
                _fmt(f1.get("5"), 2),
            ]
            row += [_fmt(m.get("bleu1", {}).get("overall")), _fmt(m.get("judge", {}).get("overall"))]
        row += [_fmt(m.get("llm_calls_per_turn"), 2), _fmt(m.get("llm_tokens_per_turn"), 0)]
        row += [_fmt(m.get("seconds_per_turn"), 2)]
        row += [f"{_fmt(m.get('search_p50_ms'), 1)} / {_fmt(m.get('search_p95_ms'), 1)}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += equal_tokens_table(methods)
    lines += audit_table(methods)
    run = summary.get("run", {})
    if run.get("consolidation"):
        lines += [
            "",
            "| store | notes | links | bytes (compacted) | merged / pruned / archived "
            "| pairs judged (called updates) / unconfirmed | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for store, c in run["consolidation"].items():
            kinds = c["changes"]
            lines.append(
                f"| {store} | {c['notes_before']} → {c['notes_after']} | {c['links_before']} → "
                f"{c['links_after']} | {c['bytes_before']:,} → {c['bytes_after']:,} | {kinds['merge']} / "
                f"{kinds['prune']} / {kinds['archive']} | {c['judged']} ({c.get('updates_left', 0)}) / "
                f"{c['unconfirmed']} | {c['seconds']} |"
            )
    lines.append("")
    lines.append(
        f"Data {run.get('data')}, conversations {', '.join(run.get('conversations', []))}, "
        f"{run.get('questions')} questions; LLM {run.get('llm')}, embedder {run.get('embedder')}, "
        f"answers by {run.get('answer_llm') or 'none'}; commit {run.get('commit')}."
    )
    return "\n".join(lines)


def equal_tokens_table(methods: dict[str, Any]) -> list[str]:
    """Each amem method beside BM25 and fusion given, question by question, the tokens it used: with
    the note shown as today (content and context) and with its content alone."""
    rows: list[str] = []
    for name, m in methods.items():
        eq = m.get("equal_tokens")
        if not eq:
            continue
        row = [name, _fmt(m.get("recall@10", {}).get("overall"))]
        for view in ("shown", "content_only"):
            e = eq.get(view, {})
            row.append(_fmt(e.get("tokens"), 0))
            for base in ("bm25", "fusion"):
                b = e.get(base)
                row.append(f"{_fmt(b['recall'].get('overall'))} ({_fmt(b['tokens'], 0)})" if b else "–")
        rows.append("| " + " | ".join(row) + " |")
    if not rows:
        return []
    return [
        "",
        "Equal context tokens: per question, each baseline gets as many of its top turns as come closest "
        "to the tokens the method's answer context used (baseline recall, with its mean tokens).",
        "",
        "| method | R@10 | tokens shown | bm25 | fusion | tokens content only | bm25 | fusion |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def audit_table(methods: dict[str, Any]) -> list[str]:
    """Faithfulness of every LLM-built store, per conversation (``amem audit``), beside its recall."""
    rows: list[str] = []
    seen: set[int] = set()
    for name, m in methods.items():
        for conv, a in (m.get("audit") or {}).items():
            if id(a) in seen:
                continue
            seen.add(id(a))
            c, u, lk, t = a["contexts"], a["updates"], a["links"], a["tags"]
            refused = sum(sum(v.values()) for v in a["refusals"]["by_field"].values())
            rows.append(
                f"| {name} | {conv} | {a['notes']} | {_fmt(c['share_grounded'])} ({c['checked']}) "
                f"| {_fmt(u['share_grounded'])} ({u['checked']}) "
                f"| {a['leaks']['count']} | {a['loops']['count']} "
                f"| {_fmt(lk['distinct_per_link'])} ({lk['links']}) | {_fmt(lk['share_naming_shared'])} "
                f"| {_fmt(t['max_share'], 2)} | {refused} |"
            )
    if not rows:
        return []
    return [
        "",
        "| store | conversation | notes | contexts grounded | updates grounded | example leaks | loops "
        "| distinct reasons / link | reasons naming shared | top tag share | refused |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, m in summary.items():
        if name == "run":
            continue
        ks = sorted(int(key.split("@")[1]) for key in m if key.startswith("recall@"))
        values = [m[f"recall@{k}"]["overall"] for k in ks]
        if any(v is None for v in values):
            continue
        ax.plot(ks, values, marker="o", label=name)
    _finish(fig, ax, path, "k (notes or turns retrieved, before link expansion)", "LoCoMo evidence recall@k")


def _finish(fig: Any, ax: Any, path: Path, xlabel: str, title: str) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("evidence recall, categories 1-4")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tokens(summary: dict[str, Any], path: Path) -> bool:
    """Recall against context tokens: one line per method as shown, dashed for a note's content alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {n: m["curve"] for n, m in summary.items() if n != "run" and m.get("curve")}
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, points in curves.items():
        ks = [k for k in sorted(points, key=int) if points[k]["recall"] is not None]
        recall = [points[k]["recall"] for k in ks]
        (line,) = ax.plot([points[k]["tokens"] for k in ks], recall, marker="o", markersize=3, label=name)
        if any(points[k]["bare_tokens"] != points[k]["tokens"] for k in ks):
            ax.plot(
                [points[k]["bare_tokens"] for k in ks],
                recall,
                linestyle="--",
                color=line.get_color(),
                label=f"{name} (content only)",
            )
    _finish(
        fig, ax, path, "answer context tokens (mean per question)", "LoCoMo evidence recall against tokens"
    )
    return True


def write(out: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "records": out / "records.json",
        "summary": out / "summary.json",
        "markdown": out / "summary.md",
        "plot": out / "recall.png",
    }
    paths["records"].write_text(json.dumps(records, indent=1, default=str))
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str))
    paths["markdown"].write_text(markdown(summary) + "\n")
    plot(summary, paths["plot"])
    if plot_tokens(summary, out / "recall_tokens.png"):
        paths["tokens_plot"] = out / "recall_tokens.png"
    return paths
