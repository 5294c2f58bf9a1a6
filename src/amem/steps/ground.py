"""Grounding: what an LLM wrote may only say what the LLM was shown for that field.

Pure text rules, shared by the write steps (which drop or repair what fails) and by ``amem audit`` (which
measures what is stored). The rule, in full (docs/design.md, "Grounding"):

- Words are runs of letters or digits; a word's stem is its first four letters (three-letter words are
  their own stem), so "passed"/"pass" and "driving"/"drive" match, "London"/"Lisbon" do not.
- Stop words, *framing* words (the verbs and nouns of saying, asking and feeling: "says", "asks",
  "thanks", "excited", "plans" ... they describe the act of speaking, not the world) and *time* words
  (months, weekdays, "yesterday", "week" ...) are not content words.
- A number is a content word unless it is a year within two years of the source dates, or a day of the
  month written next to a month name (how "yesterday" is resolved into "13 March 2022").
- A content word is *supported* when its stem occurs in the sources of the field: for a context the
  note itself, its date and the names of the speakers shown; for an update of an older note that note and
  the new one; for a link reason the two notes.
- A sentence keeps at most one unsupported ordinary word (a paraphrase: "gratitude" for "thanks"); names
  (capitalised words inside a sentence) and numbers are never paraphrases, so none may be unsupported.
  A trailing commentary clause (", indicating ...", ", which ...", ", according to ...") must be fully
  supported, or it is cut. A sentence that breaks the rule is dropped.
- Example leaks: a word of a prompt's own examples that the input does not contain drops its sentence
  (or keyword) always, and so do the prompt's own mechanics ("note", "updatable") when the input lacks
  them.
- Loops: a run of four words said a second time is cut there, with everything after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache

from ..notes import Note, format_date
from ..text import STOPWORDS

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"\s*(?:[,;:]|\s[-–—]\s)\s*")
_SPEAKER = re.compile(r"^([A-Z][\w'-]*(?: [A-Z][\w'-]*){0,2}):\s")

# fmt: off
MONTHS = ("january february march april may june july august september october november december "
          "jan feb mar apr jun jul aug sep sept oct nov dec").split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
#: Words of time: a resolved date or duration may always be written with them.
TIME_WORDS = frozenset(MONTHS + WEEKDAYS + """
today tomorrow yesterday tonight morning afternoon evening night day days week weeks weekend weekends
month months year years ago earlier later recently soon last next previous following early late
past future currently current now then time times date dates moment while since until
""".split())
#: Verbs of speaking, asking and feeling (each with its -s, -ed and -ing forms) and the nouns and function
#: words around them: they describe the act of speaking rather than the world, so any context may use
#: them ("Maya thanks Jonas for his advice" for "Thanks, that helps!").
_FRAMING_VERBS = """
ask answer reply respond mention talk discuss share express explain describe add wonder thank appreciate
congratulate encourage support compliment praise agree suggest recommend advise hope wish feel worry
concern interest admire reassure comfort update plan decide excite seem want need try look sound
""".split()
_FRAMING_WORDS = """
say says said saying tell tells told telling question questions response discussion grateful gratitude
appreciation congratulations encouragement supportive advice felt feelings excitement happy glad proud
pride sorry curious enthusiasm enthusiastic admiration sympathy empathy news decision thought thoughts
opinion view idea ideas experience experiences conversation chat topic speaker speakers person people
other friend friends someone something things thing
put puts putting get gets getting got make makes making made take takes taking took go goes going went
come comes coming came give gives giving gave keep keeps keeping become becomes became
whether though although however also still even yet maybe perhaps really already instead just quite
rather almost well much many lot lots able sure like likely will shall may might must upon within
without toward towards among across around onto via per anything everything nothing one ones
""".split()


def _inflections(verb: str) -> set[str]:
    if verb.endswith("e"):
        return {verb, verb + "s", verb + "d", verb[:-1] + "ing"}
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return {verb, verb[:-1] + "ies", verb[:-1] + "ied", verb + "ing"}
    ending = "es" if verb.endswith(("s", "sh", "ch")) else "s"
    return {verb, verb + ending, verb + "ed", verb + "ing"}


FRAMING = frozenset(_FRAMING_WORDS).union(*(_inflections(v) for v in _FRAMING_VERBS))
#: The prompts' own words: a field that uses them without the input doing so talks about the prompt.
PROMPT_WORDS = frozenset("note notes updatable alias aliases".split())
#: Commentary clauses: they must be fully supported, or they are cut (small models pad with them).
COMMENTARY = re.compile(
    r"^(?:which|indicating|suggesting|showing|highlighting|reflecting|emphasi[sz]ing|demonstrating|"
    r"underscoring|signifying|implying|according|as\s+mentioned|as\s+per|in\s+the\s+context)\b",
    re.IGNORECASE,
)
# fmt: on

#: A text may hold this many unsupported ordinary words in all (a paraphrase); never a name or a number.
PARAPHRASE_ALLOWANCE = 1
_DANGLING = re.compile(
    r"(?:[\s,;:]+(?:and|or|but|so|then|while|which|that|with|to|of|the|a|an|he|she|they|it|if|whether|"
    r"because|about|for|as|at|by|from|into|how|what|why|when|where|who))+\s*$",
    re.IGNORECASE,
)
#: A sentence that opens with a person doing or saying something: "Maria says she's doing kickboxing".
_SUBJECT = re.compile(
    r"^\W*([A-Z][\w-]*)\s+(?:says|said|asks|asked|tells|told|mentions|mentioned|shares|shared|thanks|"
    r"thanked|explains|describes|talks|is|was|has|had|got|gets|started|starts|plans|wants|loves|feels|"
    r"hopes|did|does|went|goes)\b"
)
#: A loop: this many words said again.
LOOP_NGRAM = 4
#: A full date may be this many days from a source's date (a resolved "last Saturday" or "next weekend").
RESOLVE_DAYS = 8


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def stem(word: str) -> str:
    w = word.lower().replace("’", "'").split("'")[0]
    return w[:4] if len(w) >= 4 else w


def is_number(word: str) -> bool:
    """ASCII digits only: "²" or "٣" are digits to ``str.isdigit`` but no number ``int`` reads."""
    return word.isascii() and word.isdigit()


def _is_year(word: str) -> bool:
    return len(word) == 4 and is_number(word) and 1000 <= int(word) <= 2999


def is_content(word: str) -> bool:
    lw = word.lower().replace("’", "'")
    if "'" in lw and lw.split("'")[0] in STOPWORDS:  # you're, she'll, it's
        return False
    if is_number(lw):
        return True
    return len(lw) >= 3 and lw not in STOPWORDS and lw not in FRAMING and lw not in TIME_WORDS


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in tokens(text) if is_content(w) and not is_number(w)}


@dataclass
class Sources:
    """What the LLM was shown for one field: the stems of its texts, their years and their words."""

    stems: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    years: set[int] = field(default_factory=set)
    dates: set[date] = field(default_factory=set)

    @classmethod
    def of(cls, texts: Iterable[str], dates: Iterable[datetime] = ()) -> Sources:
        src = cls()
        for text in texts:
            src.add(text)
        for when in dates:
            src.add(format_date(when))
            src.years.add(when.year)
            src.dates.add(when.date())
        return src

    @classmethod
    def of_notes(cls, notes: Iterable[Note], names: Iterable[str] = ()) -> Sources:
        notes = list(notes)
        return cls.of([n.content for n in notes] + list(names), [n.event_time for n in notes])

    def add(self, text: str) -> None:
        for w in tokens(text):
            if is_number(w):
                self.numbers.add(w.lstrip("0") or "0")
            else:
                self.stems.add(stem(w))

    def supports(self, word: str) -> bool:
        if is_number(word):
            return (word.lstrip("0") or "0") in self.numbers
        return stem(word) in self.stems


@dataclass
class Verdict:
    """What a text field kept, and why the rest went."""

    text: str
    problems: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # the words that made a part go

    @property
    def changed(self) -> bool:
        return bool(self.problems)


def cut_loop(text: str, n: int = LOOP_NGRAM) -> tuple[str, bool]:
    """``text`` up to the first run of ``n`` words that repeats an earlier run; True if it was cut."""
    spans = [(m.start(), m.group().lower()) for m in _TOKEN.finditer(text)]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(spans) - n + 1):
        gram = tuple(w for _, w in spans[i : i + n])
        if gram in seen:
            # cut where the repeated run starts, and the words that only led into it ("..., and")
            head = _DANGLING.sub("", text[: spans[i][0]]).rstrip(" ,;:-–—")
            return head, True
        seen.add(gram)
    return text, False


def has_loop(text: str, n: int = LOOP_NGRAM) -> bool:
    return cut_loop(text, n)[1]


def _unsupported(
    words: Sequence[str], sources: Sources, leaks: frozenset[str], shown: set[str] | None, first: bool
) -> tuple[list[str], list[str], list[str]]:
    """(unsupported ordinary words, unsupported names or numbers, leaked words) of one clause. ``shown``:
    the stems of everything the prompt showed as input (None: the sources); a leak is a word of the
    examples or of the prompt's mechanics that the input does not hold."""
    shown = sources.stems if shown is None else shown
    ordinary: list[str] = []
    strict: list[str] = []
    leaked: list[str] = []
    for i, w in enumerate(words):
        lw = w.lower()
        if is_number(w) or (is_number(w[:-2]) and lw[-2:] in ("st", "nd", "rd", "th")):
            digits = w if is_number(w) else w[:-2]
            year_ok = _is_year(digits) and any(abs(int(digits) - y) <= 2 for y in sources.years)
            if sources.supports(digits) or year_ok or _resolved_day(words, i, int(digits), sources):
                continue
            strict.append(w)
            continue
        if (not is_content(w) and lw not in PROMPT_WORDS) or sources.supports(w):
            continue
        if (lw in PROMPT_WORDS or stem(w) in leaks) and stem(w) not in shown:
            leaked.append(w)
            continue
        if not is_content(w):
            continue
        capitalised = w[:1].isupper() and not (first and i == 0)
        (strict if capitalised else ordinary).append(w)
    return ordinary, strict, leaked


def _resolved_day(words: Sequence[str], i: int, day: int, sources: Sources) -> bool:
    """A day of the month written next to a month name is a resolved relative date ("yesterday", "last
    Saturday", "next weekend"): allowed within ``RESOLVE_DAYS`` of a source's date, never further."""
    if not 1 <= day <= 31:
        return False
    near = [x.lower() for x in words[max(0, i - 1) : i + 2]]
    months = [MONTHS.index(x) % 12 + 1 for x in near if x in MONTHS]
    if not months:
        return False
    after = words[i + 1 : i + 4]
    years = [int(x) for x in after if _is_year(x)] or sorted({d.year for d in sources.dates})
    for year in years:
        try:
            when = date(year, months[0], day)
        except ValueError:
            continue
        if any(abs((when - d).days) <= RESOLVE_DAYS for d in sources.dates):
            return True
    return False


def check_text(
    text: str,
    sources: Sources,
    leaks: frozenset[str] = frozenset(),
    shown: set[str] | None = None,
    max_sentences: int = 2,
) -> Verdict:
    """Keep the grounded sentences of ``text`` (loops cut, commentary clauses trimmed)."""
    text, looped = cut_loop(text)
    problems = ["loop cut"] if looped else []
    bad: list[str] = []
    kept: list[str] = []
    allowance = PARAPHRASE_ALLOWANCE
    for sentence in (s.strip() for s in _SENTENCE.split(text) if s.strip()):
        clauses = [c for c in _CLAUSE.split(sentence.rstrip(".!? ")) if c]
        if not clauses:
            continue
        keep_clauses: list[str] = []
        ordinary: list[str] = []
        strict: list[str] = []
        for ci, clause in enumerate(clauses):
            words = tokens(clause)
            o, s, leaked = _unsupported(words, sources, leaks, shown, ci == 0)
            if leaked:
                bad += leaked
                problems.append(f"example or prompt words not in the input: {', '.join(leaked)}")
                if ci == 0:
                    keep_clauses = []
                    break
                continue
            if ci > 0 and COMMENTARY.match(clause) and (o or s):
                bad += o + s
                problems.append(f"commentary not in the input cut: {', '.join(o + s)}")
                continue
            keep_clauses.append(clause)
            ordinary += o
            strict += s
        if not keep_clauses:
            continue
        if looped and not any(is_content(w) for c in keep_clauses for w in tokens(c)):
            continue  # a fragment ("It.") left by a cut loop says nothing
        if strict or len(ordinary) > allowance:
            bad += strict + ordinary
            problems.append(f"unsupported words: {', '.join(strict + ordinary)}")
            continue
        allowance -= len(ordinary)
        joined = _join_clauses(sentence, keep_clauses)
        trimmed = _DANGLING.sub("", joined.rstrip(".!? "))
        if trimmed != joined.rstrip(".!? "):  # "Maria asks John if." says nothing it can stand by
            problems.append("a dangling word cut")
            joined = trimmed + "."
        kept.append(joined)
        if len(kept) >= max_sentences:
            break
    return Verdict(" ".join(kept), problems, bad)


def attributed(verdict: Verdict, speaker: str | None, people: Iterable[str]) -> Verdict:
    """``verdict`` without the sentences that make another person of the scope the one who says or does
    what a turn of ``speaker`` says ("Maria says she's doing kickboxing" for John's "I'm doing
    kickboxing"): every word is the turn's, the attribution is not."""
    others = {p for p in people if p != speaker}
    if not speaker or not others or not verdict.text:
        return verdict
    kept: list[str] = []
    wrong: list[str] = []
    for sentence in (x.strip() for x in _SENTENCE.split(verdict.text) if x.strip()):
        match = _SUBJECT.match(sentence)
        (wrong if match and match.group(1) in others else kept).append(sentence)
    if not wrong:
        return verdict
    names = sorted({m.group(1) for x in wrong if (m := _SUBJECT.match(x))})
    problem = f"said or done by {', '.join(names)}, not by {speaker}"
    return Verdict(" ".join(kept), [*verdict.problems, problem], [*verdict.words, *names])


def _join_clauses(sentence: str, clauses: list[str]) -> str:
    """The sentence again from the clauses kept, with its own separators where they survive."""
    parts = [m for m in _CLAUSE.split(sentence.rstrip(".!? ")) if m]
    out = sentence.rstrip() if parts == clauses else ", ".join(clauses)
    return out if out[-1:] in ".!?" else out + "."


def unsupported_words(text: str, sources: Sources) -> list[str]:
    """Every content word of ``text`` the sources do not hold (names and numbers included): the audit's
    measure of invention, stricter than the write rule's paraphrase allowance."""
    out: list[str] = []
    for sentence in _SENTENCE.split(text):
        for clause in _CLAUSE.split(sentence):
            o, s, leaked = _unsupported(tokens(clause), sources, frozenset(), None, False)
            out += o + s + leaked
    return out


def leaked_words(text: str, leaks: frozenset[str], input_stems: set[str]) -> list[str]:
    return [w for w in tokens(text) if stem(w) in leaks and stem(w) not in input_stems]


def speaker_of(note: Note) -> str | None:
    match = _SPEAKER.match(note.content)
    if match:
        return match.group(1)
    speaker = note.metadata.get("speaker")
    return speaker if isinstance(speaker, str) and speaker else None


def own_stems(note: Note) -> set[str]:
    """The note's content stems, its speaker's name aside."""
    speaker = speaker_of(note)
    return content_stems(note.content) - (content_stems(speaker) if speaker else set())


@cache
def prompt_leaks() -> frozenset[str]:
    """The stems of what only the prompts' examples say (each prompt module's ``EXAMPLE_WORDS``): a field
    using one of them, when the input does not, copied an example."""
    from ..prompts import analyse, batch, episode, evolve, merge, note, repair

    modules = (analyse, batch, episode, evolve, merge, note, repair)
    return frozenset(stem(w) for m in modules for w in tokens(m.EXAMPLE_WORDS))
