"""Reader for LoCoMo-format conversations (shared by `amem ingest --format locomo` and the benchmark)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import InvalidInput

_SESSION = re.compile(r"^session_(\d+)$")
_EVIDENCE = re.compile(r"D\d+:\d+")


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    event_time: datetime
    blip_caption: str | None = None

    def content(self) -> str:
        """What becomes the note: the speaker's words, and what a shared image shows."""
        body = f"{self.speaker}: {self.text}".strip()
        if self.blip_caption:
            body += f" [shares a photo: {self.blip_caption}]"
        return body


@dataclass
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    turns: list[Turn]
    qa: list[dict[str, Any]] = field(default_factory=list)


def parse_session_time(value: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> 2023-05-08 13:56 UTC (LoCoMo gives no zone; UTC is assumed)."""
    text = " ".join(value.replace(",", " ").split())
    for fmt in ("%I:%M %p on %d %B %Y", "%I:%M%p on %d %B %Y", "%I:%M %p on %d %b %Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise InvalidInput(f"cannot read the session date {value!r}; expected e.g. '1:56 pm on 8 May, 2023'")


def load(path: str | Path) -> list[Conversation]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"LoCoMo file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read LoCoMo file {path}: {exc}") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(c, dict) and "conversation" in c for c in raw):
        raise InvalidInput(f"{path} is not in LoCoMo format (a list of objects with a 'conversation')")
    return [_conversation(i, c) for i, c in enumerate(raw)]


def _conversation(index: int, item: dict[str, Any]) -> Conversation:
    conv = item["conversation"]
    if not isinstance(conv, dict):
        raise InvalidInput(f"conversation {index}: 'conversation' must be an object")
    sessions = sorted(int(m.group(1)) for k in conv if (m := _SESSION.match(k)))
    turns: list[Turn] = []
    for n in sessions:
        when_raw = conv.get(f"session_{n}_date_time")
        if not when_raw:
            raise InvalidInput(f"conversation {index}: session_{n} has no session_{n}_date_time")
        when = parse_session_time(str(when_raw))
        session = conv[f"session_{n}"] or []
        if not isinstance(session, list):
            raise InvalidInput(f"conversation {index}: session_{n} must be a list of turns")
        for position, t in enumerate(session):
            if not isinstance(t, dict) or not t.get("dia_id"):
                raise InvalidInput(
                    f"conversation {index}, session_{n}, turn {position}: expected an object with a 'dia_id'"
                )
            text = str(t.get("text") or "").strip()
            caption = t.get("blip_caption")
            if not text and not caption:
                continue
            turns.append(
                Turn(
                    dia_id=str(t["dia_id"]),
                    speaker=str(t.get("speaker", "")),
                    text=text,
                    session=n,
                    event_time=when,
                    blip_caption=str(caption) if caption else None,
                )
            )
    speakers = (str(conv.get("speaker_a", "")), str(conv.get("speaker_b", "")))
    return Conversation(
        str(item.get("sample_id", f"conv-{index}")), speakers, turns, list(item.get("qa", []))
    )


def evidence_ids(evidence: Any) -> set[str]:
    """LoCoMo evidence lists hold 'D1:3', but also 'D8:6; D9:17' and the odd malformed id."""
    return {m for item in evidence or [] for m in _EVIDENCE.findall(str(item))}


def truncate(
    conv: Conversation, max_sessions: int | None = None, max_turns: int | None = None
) -> tuple[Conversation, datetime | None]:
    """The first ``max_sessions`` sessions and at most ``max_turns`` turns, and the horizon: the event time
    of the first turn left out. Searches filtered to before the horizon see the same turns whatever was
    ingested; questions are kept only when all their evidence lies before it."""
    turns = conv.turns
    if max_sessions is not None:
        keep = set(sorted({t.session for t in turns})[:max_sessions])
        turns = [t for t in turns if t.session in keep]
    if max_turns is not None:
        turns = turns[:max_turns]
    kept = {t.dia_id for t in turns}
    left_out = [t.event_time for t in conv.turns if t.dia_id not in kept]
    if not left_out:
        return conv, None
    horizon = min(left_out)
    visible = {t.dia_id for t in turns if t.event_time < horizon}
    qa = [q for q in conv.qa if evidence_ids(q.get("evidence", [])) <= visible]
    return Conversation(conv.sample_id, conv.speakers, turns, qa), horizon


def pick(path: str | Path, conversation: str | None) -> Conversation:
    """The conversation ``conversation`` of a LoCoMo file (None: its first), for the benches that run one."""
    found = [c for c in load(path) if conversation is None or c.sample_id == conversation]
    if not found:
        raise InvalidInput(f"no conversation {conversation!r} in {path}")
    return found[0]
