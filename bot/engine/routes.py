"""Which flows a typed text starts, remembered per text for one set of flows.

Routing a text compares it with every flow's start words, typos allowed,
then looks for a command named in a short sentence (bot.engine.keywords):
about 60 µs for a text that starts nothing, on every message, for the
thirteen shipped flows. The answer depends only on the text and the flows,
drivers repeat their commands (ESTADO, 1, SI), and flows change only on a
reload, which builds a new `StartWords`; so answers are kept per text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from bot.engine import keywords
from bot.engine.flows import FlowSpec
from bot.engine.text import close_enough, collapse_shout, words

# Texts remembered, at most; past it the memory starts over.
REMEMBERED = 2048
# Longer texts are stories rather than commands, and seldom come twice.
LONGEST_REMEMBERED = 64

# Words a text may have and still be small talk by its first word
# ("ok gracias", "vale, perfecto", "lista porfa").
SMALL_TALK_WORDS = 3

K = TypeVar("K")
V = TypeVar("V")


class StartWords:
    """The start words of one set of flows, asked by typed text."""

    def __init__(self, specs: Iterable[FlowSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self._said: dict[str, frozenset[str]] = {}
        self._named: dict[tuple[str, str | None], str | None] = {}

    def said(self, typed: str) -> frozenset[str]:
        """The flows one of whose start words is the text (`command_form`)."""
        found = self._said.get(typed)
        if found is None:
            first = _first_word(typed)
            # A word some flow names exactly is that flow's, never a typo of
            # another flow's word (`ayudas` of a flow that lists it is not
            # AYUDA).
            found = frozenset(
                name
                for name, spec in self.specs.items()
                if typed in spec.start
                or (first in spec.start and _first_word_counts(spec, typed))
            ) or frozenset(
                name for name, spec in self.specs.items() if starts(spec, typed, first)
            )
            found = self._command_after_small_talk(typed, found)
            _remember(self._said, typed, typed, found)
        return found

    def _command_after_small_talk(
        self, typed: str, found: frozenset[str]
    ) -> frozenset[str]:
        """A command after an OK or a thanks is what the text asks for: "ok,
        estado" got "¡De nada!" and no status."""
        if not found or any(
            self.specs[name].command is not None or typed in self.specs[name].start
            for name in found
        ):
            return found
        rest = " ".join(words(typed)[1:])
        then = self.said(rest) if rest else frozenset()
        if any(self.specs[name].command is not None for name in then):
            return then
        return found

    def named(self, typed: str, exclude: str | None = None) -> str | None:
        """The one keyword flow, other than `exclude`, a short text names."""
        key = (typed, exclude)
        if key in self._named:
            return self._named[key]
        specs = (s for name, s in self.specs.items() if name != exclude)
        spec = keywords.named_in(specs, typed)
        name = None if spec is None else spec.name
        _remember(self._named, key, typed, name)
        return name


def starts(spec: FlowSpec, typed: str, first: str | None = None) -> bool:
    """Whether a normalised text is one of the flow's start words.

    `first` is the text's first word with held-down letters collapsed
    (`_first_word`), when the caller has it already.
    """
    if not typed or not spec.start:
        return False
    if typed in spec.start:
        return True
    if first is None:
        first = _first_word(typed)
    if first is None or not _first_word_counts(spec, typed):
        return False
    if spec.cancels:
        # Undoing work takes the word as it is: `sali de faena` ("I left
        # the site") and `canceló la carga` cancelled the flow in progress.
        return first in spec.start
    return any(close_enough(first, w) for w in spec.start)


def _first_word_counts(spec: FlowSpec, typed: str) -> bool:
    """Whether a text may start `spec` by its first word alone.

    Small talk (a flow without a command: a thanks, an OK, the menu word)
    starts so only in a short text: "Ok, pero el camión tiene una falla y
    necesito ayuda" got "¡De nada!" instead of the help it asked for.
    """
    return spec.command is not None or len(words(typed)) <= SMALL_TALK_WORDS


def _first_word(typed: str) -> str | None:
    found = words(typed)
    return collapse_shout(found[0]) if found else None


def _remember(memory: dict[K, V], key: K, typed: str, value: V) -> None:
    if len(typed) > LONGEST_REMEMBERED:
        return
    if len(memory) >= REMEMBERED:
        memory.clear()
    memory[key] = value
