"""Episode write step: ONE call for a run of consecutive turns (an episode), answering only for the turns
that need it. Keywords and link reasons are derived from the text without the LLM (the ablations showed
the LLM's own add little once they must be the note's words), so the call writes only what the text
cannot give: who-is-who and dates resolved in a context sentence, the episode's topic, which notes are
related, and corrections of older notes.

Turns are T1..Tn, older notes N1..Nm; the example uses other aliases (A1, R1) so a copied example
names nothing that exists.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from ..steps.ground import speaker_of
from .common import Candidate, clean_sentence, clean_terms, clip, show_note
from .note import UpdateOut, filter_updates

VERSION = "episode-v4"
#: What only the example says (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Priya sister driving test Tom car"
STEP = "construct_episode"
#: At most this many links per turn: small models otherwise link everything to everything.
MAX_LINKS = 2
#: At most this many older notes rewritten per episode.
MAX_UPDATES = 2
#: A context is short: it names who and what and resolves references; the turn itself says the rest.
CONTEXT_CHARS = 120

INSTRUCTIONS = """You maintain an agent's long-term memory. An EPISODE of a conversation follows: its turns T1, T2, ... in order, with their date. OLDER NOTES (N1, N2, ...) from the same memory come before it.
Answer with one JSON object:
- "topic": what the episode is about, in 2 to 4 of its own words;
- "contexts": for each turn asked for (its key is the turn and who speaks it), what THAT speaker says or does in that turn, as the rest of a sentence that starts with their name ("says ...", "asks ...", "shares ..."), at most 15 words: other people named instead of "you", "he" or "she", the thing that "it" or "that" stands for, relative times ("yesterday", "last week", "next month") turned into dates from the turn's date. Use only what the turns and notes say;
- "links": for a turn about the same specific person, event, object or plan as an older note (N...), that note; only real matches, usually none;
- "updates" (only when some older note is UPDATABLE): for an UPDATABLE note that the episode changes, completes or contradicts (a plan decided, a problem solved, a fact that changed), its corrected one-sentence context. Usually empty.

Example input:
OLDER NOTES:
R1 [2 March 2022 (Wednesday)] Priya: My sister keeps failing her driving test.
UPDATABLE: R1
EPISODE:
[14 March 2022 (Monday)]
A1 Priya: Hi Tom!
A2 Priya: My sister finally passed it yesterday!
A3 Tom: Great news! Is she buying a car now?
Contexts for: A2 Priya, A3 Tom
Example answer:
{"topic": "sister's driving test", "contexts": {"A2 Priya": "says her sister passed her driving test on 13 March 2022.", "A3 Tom": "asks whether Priya's sister will now buy a car."}, "links": {"A2": ["R1"]}, "updates": [{"note": "R1", "context": "Priya's sister kept failing her driving test until she passed it on 13 March 2022."}]}

Now the real input."""


class EpisodeOutput(BaseModel):
    """Contexts and links of unknown or skipped turns are dropped, as are links to unknown or later
    notes: such a turn keeps the fields derived from its text. Nothing asked for may be missing."""

    topic: str = ""
    contexts: dict[str, str] = Field(default_factory=dict)
    links: dict[str, list[str]] = Field(default_factory=dict)
    updates: list[UpdateOut] = Field(default_factory=list)

    @field_validator("topic", mode="before")
    @classmethod
    def _topic(cls, v: Any) -> str:
        text = clean_sentence(v if isinstance(v, str) else "", 60, max_sentences=1).rstrip(".")
        return text if len(text) <= 30 else text[:31].rsplit(" ", 1)[0]

    @field_validator("contexts", mode="before")
    @classmethod
    def _contexts(cls, v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise ValueError("contexts must be an object of turn: sentence")
        return {str(k).strip(): clean_sentence(t, 300, max_sentences=1) for k, t in v.items()}

    @field_validator("links", mode="before")
    @classmethod
    def _links(cls, v: Any) -> dict[str, list[str]]:
        if not isinstance(v, dict):
            return {}
        return {str(k).strip().upper(): [a.upper() for a in clean_terms(t or [], 8, 8)] for k, t in v.items()}

    @model_validator(mode="after")
    def _aliases(self, info: ValidationInfo) -> EpisodeOutput:
        ctx = info.context or {}
        turns = list(ctx.get("turn_aliases", ()))
        answerable = list(ctx.get("answer_aliases", turns))
        older = set(ctx.get("link_aliases", ()))
        keys: dict[str, str] = dict(ctx.get("context_keys", {}))  # "T3 Gina" -> "T3"
        speakers: dict[str, str] = dict(ctx.get("speakers", {}))
        contexts: dict[str, str] = {}
        for key, text in self.contexts.items():
            alias = keys.get(key, key.split(" ")[0].upper())
            if alias in answerable and alias not in contexts and len(text) >= 8:
                who = speakers.get(alias)
                # the value goes on from the speaker's name ("says ..."); one that starts a sentence of its
                # own ("Hopefully, we ...") copied the turn instead
                if who and text.casefold().startswith(who.casefold() + " "):
                    text = text[len(who) + 1 :]
                if who and not text[:1].islower():
                    continue
                contexts[alias] = f"{who} {text}" if who else text
        self.contexts = contexts
        if answerable and not self.contexts:
            raise ValueError("give a context for each turn asked for")
        links: dict[str, list[str]] = {}
        for alias, picked in self.links.items():
            if alias in turns:
                kept = [a for a in dict.fromkeys(picked) if a in older]
                kept = kept[:MAX_LINKS]
                if kept:
                    links[alias] = kept
        self.links = links
        self.updates = filter_updates(self.updates, set(ctx.get("update_aliases", ())))[:MAX_UPDATES]
        return self


def turn_lines(turns: list[tuple[str, Note]]) -> list[str]:
    """The turns in order, each date said once (an episode's turns mostly share one)."""
    lines: list[str] = []
    shown = None
    for alias, note in turns:
        day = format_date(note.event_time)
        if day != shown:
            lines.append(f"[{day}]")
            shown = day
        lines.append(f"{alias} {clip(note.content, 1200)}")
    return lines


def render(
    turns: list[tuple[str, Note]],
    answerable: list[str],
    candidates: list[Candidate],
    updatable: list[str],
) -> Prompt[EpisodeOutput]:
    """``answerable``: the turns an entry may be given for (the others say nothing worth an LLM's word;
    they are shown so that the conversation reads whole)."""
    aliases = [alias for alias, _ in turns]
    older = [c.alias for c in candidates]
    lines = [INSTRUCTIONS]
    if candidates:
        lines.append("OLDER NOTES:")
        lines.extend(show_note(c.alias, c.note, content_chars=200) for c in candidates)
        lines.append("UPDATABLE: " + (", ".join(updatable) if updatable else "none"))
    else:
        lines.append("OLDER NOTES: none")
    lines.append("EPISODE:")
    lines.extend(turn_lines(turns))
    who = {alias: speaker_of(note) for alias, note in turns}
    keys = {(f"{a} {who[a]}" if who[a] else a): a for a in answerable}
    lines.append("Contexts for: " + (", ".join(keys) if keys else "none"))
    lines.append("Answer:")
    sentence = {"type": "string", "minLength": 8, "maxLength": CONTEXT_CHARS}
    # a trivial turn is no link's target either
    targets = {
        "type": "array",
        "maxItems": MAX_LINKS,
        "items": {"type": "string", "enum": older + answerable},
    }
    properties: dict[str, Any] = {
        "topic": {"type": "string", "minLength": 3, "maxLength": 30},
        # every turn asked for is a required key, in order: the model cannot skip or repeat one
        "contexts": {
            "type": "object",
            "properties": {key: sentence for key in keys},
            "required": list(keys),
        },
        # optional keys: a turn with no link says nothing
        "links": {
            "type": "object",
            "properties": {a: targets for a in answerable if older or a != answerable[0]},
        },
    }
    if updatable:
        properties["updates"] = {
            "type": "array",
            "maxItems": min(MAX_UPDATES, len(updatable)),
            "items": {
                "type": "object",
                "properties": {
                    "note": {"type": "string", "enum": updatable},
                    "context": {"type": "string", "minLength": 8, "maxLength": 240},
                },
                "required": ["note", "context"],
            },
        }
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return Prompt(
        step=STEP,
        version=VERSION,
        messages=[Message("user", "\n".join(lines))],
        output=EpisodeOutput,
        schema=schema,
        max_tokens=60 + 50 * len(answerable) + 12 * len(aliases) + 80 * min(MAX_UPDATES, len(updatable)),
        context={
            "turn_aliases": aliases,
            "answer_aliases": answerable,
            "link_aliases": older,
            "update_aliases": updatable,
            "context_keys": keys,
            "speakers": {a: w for a, w in who.items() if w},
        },
    )
