"""Commands named inside a short sentence: "¿dónde está mi guía?".

A flow with `keywords: true` also starts when a short message names its
start words and no other such flow's. Short means at most `MAX_WORDS` words
in all (links left out) and the command in a sentence of at most
`MAX_SENTENCE` words: "el estado de mi viaje?" starts ESTADO (both words
are its own), "estado de mi guía" starts nothing, because it is ambiguous.
Words match with the typo tolerance of `close_enough`, and a held-down
letter counts once (AYUDAAA).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from bot.engine.flows import FlowSpec
from bot.engine.text import close_enough, collapse_shout, words

# A command within a sentence of this many words; longer ones are stories,
# where guessing does more harm than the fallback reply.
MAX_SENTENCE = 8
# And within a message of this many words (a question plus a remark).
MAX_WORDS = 30
_LINK = re.compile(r"\b(?:https?://|www\.)\S+")
_SENTENCE_END = re.compile(r"[.!?¡¿;\n]+|\.\.\.")


def named_in(specs: Iterable[FlowSpec], typed: str) -> FlowSpec | None:
    """The one keyword flow a normalised short text names, if exactly one."""
    flows = {spec.name: spec for spec in specs if spec.keywords}
    found = named({name: spec.start for name, spec in flows.items()}, typed)
    return flows[found.pop()] if len(found) == 1 else None


def named(candidates: Mapping[str, Iterable[str]], typed: str) -> set[str]:
    """The candidates whose words a normalised short text says."""
    text = _LINK.sub(" ", typed)
    if not text or len(words(text)) > MAX_WORDS:
        return set()

    sentences = [
        [collapse_shout(w) for w in words(part)] for part in _SENTENCE_END.split(text)
    ]
    short = [s for s in sentences if 0 < len(s) <= MAX_SENTENCE]
    return {
        name
        for name, starts in candidates.items()
        if any(_names(tuple(starts), said) for said in short)
    }


def _names(starts: tuple[str, ...], said: list[str]) -> bool:
    for start in starts:
        if " " in start:
            # A phrase ("donde estoy") must appear whole.
            if f" {start} " in f" {' '.join(said)} ":
                return True
        elif any(close_enough(word, start) for word in said):
            return True
    return False
