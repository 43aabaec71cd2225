"""Compiling flow specs into `transitions` machines, once, at load time.

Each flow becomes one `AsyncMachine` with no model of its own. Handling a
message puts a short-lived `Turn` at the stored state and fires the
machine's event for the message on it, so no per-phone object outlives its
message and no machine is built per message. The turn is never added to
the machine as a model: `add_model` binds a convenience method per state
and trigger to it, and with `remove_model` that cost 19 µs a message for a
one-state flow and 110 µs for `vincular`'s twelve states, for methods
nothing calls.

Triggers: `receive` carries the driver's message; `advance` follows a
state's `always` transitions, which need no input.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from transitions.extensions.asyncio import AsyncMachine

from bot.engine import registry
from bot.engine.flows import FlowSpec, StateSpec, TransitionSpec
from bot.engine.interactive import render_reply
from bot.engine.text import answer_form, visible
from bot.errors import FlowError
from bot.whatsapp.events import InboundMessage

log = logging.getLogger("tracbot.engine")

RECEIVE = "receive"
ADVANCE = "advance"
# Bound on `always` hops in one turn; the checker rejects cycles, this keeps
# a flow that slipped through from spinning.
MAX_HOPS = 16

# Where conversation tests collect the states entered and the transitions
# taken, as (flow, label) pairs; None (the default) records nothing.
TRACE: ContextVar[list[tuple[str, str]] | None] = ContextVar("trace", default=None)


def transition_label(source: str, kind: str, index: int) -> str:
    """How reports name a transition: `pedir_rut.on[1]`."""
    return f"{source}.{kind}[{index}]"


@dataclass(eq=False)
class Turn:
    """The model bound to a flow's machine while one message is handled."""

    flow: FlowSpec
    message: InboundMessage | None
    slots: dict[str, Any]
    context: dict[str, Any]
    render: Callable[[str, dict[str, Any]], str]
    services: Any = None
    state: str = ""
    replies: list[str] = field(default_factory=list)
    ended: bool = False
    # Whether the message would start another flow if this one did not take
    # it (the engine's own routing; `es_comando`).
    takes_over: Callable[[], bool] | None = None

    def template_context(self) -> dict[str, Any]:
        """The values a reply template can read."""
        return {**self.context, **self.slots, "slots": dict(self.slots)}

    def say(self, reply: str | Mapping[str, Any]) -> None:
        """Queue a rendered reply: a template name, or a mapping that adds
        buttons, a list or a location request (`bot.engine.interactive`)."""
        context = self.template_context()
        self.replies.append(render_reply(reply, self.render, context))


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    spec: FlowSpec
    machine: AsyncMachine

    async def run(self, turn: Turn, start: bool) -> None:
        """Advance `turn` by one message, or enter the initial state."""
        if start:
            turn.state = self.spec.initial
            _enter(self.spec.states[turn.state], turn)
        elif not await self._fire(RECEIVE, turn):
            turn.context["rejected"] = True
            return
        await self._follow_always(turn)
        turn.ended = self.spec.states[turn.state].final

    async def _follow_always(self, turn: Turn) -> None:
        for _ in range(MAX_HOPS):
            if not self.spec.states[turn.state].always:
                return
            if not await self._fire(ADVANCE, turn):
                return
        log.error("flow=%s state=%s: too many hops", self.spec.name, turn.state)

    async def _fire(self, trigger: str, turn: Turn) -> bool:
        """Whether a transition of `trigger` from the turn's state was taken.

        A flow without any transition of that kind has no such event, which
        is one more way of taking none.
        """
        event = self.machine.events.get(trigger)
        if event is None:
            return False
        return bool(await event.trigger(turn, turn=turn))


def compile_flow(spec: FlowSpec) -> CompiledFlow:
    """Build the machine of a flow.

    Raises:
        FlowError: a condition or action name is not registered.
    """
    states = [_state(state) for state in spec.states.values()]
    transitions = []
    for state in spec.states.values():
        for i, item in enumerate(state.on):
            label = transition_label(state.name, "on", i)
            transitions.append(_transition(spec, RECEIVE, state.name, item, label))
        for i, item in enumerate(state.always):
            label = transition_label(state.name, "always", i)
            transitions.append(_transition(spec, ADVANCE, state.name, item, label))

    machine = AsyncMachine(
        model=None,
        states=states,
        transitions=transitions,
        initial=spec.initial,
        auto_transitions=False,
        send_event=True,
        ignore_invalid_triggers=True,
        model_attribute="state",
    )
    return CompiledFlow(spec, machine)


def _state(state: StateSpec) -> dict[str, Any]:
    def on_enter(event: Any) -> None:
        _enter(state, event.model)

    return {"name": state.name, "on_enter": [on_enter]}


def _enter(state: StateSpec, turn: Turn) -> None:
    _note(turn.flow.name, state.name)
    if state.reply:
        turn.say(state.reply)


def _note(flow: str, label: str) -> None:
    trace = TRACE.get()
    if trace is not None:
        trace.append((flow, label))


def _transition(
    spec: FlowSpec, trigger: str, source: str, item: TransitionSpec, label: str
) -> dict[str, Any]:
    if item.dest not in spec.states:
        raise FlowError(f"{spec.path}: states.{source}: unknown state {item.dest!r}")
    conditions = [_accepts(item)]
    conditions += [_hook(spec, registry.CONDITIONS, n) for n in item.conditions]
    unless = [_hook(spec, registry.CONDITIONS, n) for n in item.unless]
    before = [_saver(item)] + [_hook(spec, registry.ACTIONS, n) for n in item.actions]
    if item.reply:
        before.append(_sayer(item.reply))
    before.append(lambda event: _note(spec.name, label))
    return {
        "trigger": trigger,
        "source": source,
        "dest": item.dest,
        "conditions": conditions,
        "unless": unless,
        "before": [_in_order(before)],
    }


def _in_order(callbacks: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    # AsyncMachine runs a transition's callbacks concurrently (await_all);
    # a reply must see the slots its actions set, so they run one by one.
    async def run(event: Any) -> None:
        for callback in callbacks:
            result = callback(event)
            if inspect.isawaitable(result):
                await result

    return run


def _hook(spec: FlowSpec, table: dict[str, Any], name: str) -> Callable[..., Any]:
    fn = table.get(name)
    if fn is None:
        kind = "condition" if table is registry.CONDITIONS else "action"
        raise FlowError(f"{spec.path}: unknown {kind} {name!r}")

    async def call(event: Any) -> Any:
        result = fn(event.model)
        if inspect.isawaitable(result):
            result = await result
        return result

    return call


def _saver(item: TransitionSpec) -> Callable[[Any], None]:
    def save(event: Any) -> None:
        turn: Turn = event.model
        if item.save and turn.message is not None:
            turn.slots[item.save] = _value_of(turn.message)

    return save


def _sayer(template: str) -> Callable[[Any], None]:
    def say(event: Any) -> None:
        event.model.say(template)

    return say


def _value_of(message: InboundMessage) -> Any:
    if message.location is not None:
        loc = message.location
        return {
            "latitude": loc.latitude,
            "longitude": loc.longitude,
            # Most pins carry no place name or address: empty, not None,
            # which a template printing `{{ pin.address }}` could not show.
            "name": loc.name or "",
            "address": loc.address or "",
        }
    if message.reply_id is not None:
        return message.reply_id
    return (message.text or "").strip()


def _accepts(item: TransitionSpec) -> Callable[[Any], bool]:
    """Return the condition that the message is the input this transition takes."""

    def accepts(event: Any) -> bool:
        message: InboundMessage | None = event.model.message
        if event.event.name == ADVANCE:
            return True
        if message is None:
            return False
        return input_matches(item, message)

    return accepts


# Which replies each input kind takes: `button` stays the catch-all it was.
REPLY_KINDS = {
    "button": {"button_reply", "list_reply", "quick_reply", "other"},
    "list": {"list_reply"},
    "quick_reply": {"quick_reply"},
}


def _reply_kind(message: InboundMessage) -> str | None:
    if message.reply_id is None:
        return None
    if message.type == "button":
        return "quick_reply"
    kind = (message.raw.get("interactive") or {}).get("type")
    return kind if kind in ("button_reply", "list_reply") else "other"


def input_matches(item: TransitionSpec, message: InboundMessage) -> bool:
    """Whether a message is the kind of input a transition accepts."""
    if item.input == "location":
        return message.location is not None
    if item.input == "media":
        return message.media is not None
    if item.input in ("button", "list", "quick_reply"):
        return _reply_kind(message) in REPLY_KINDS[item.input] and (
            not item.ids or message.reply_id in item.ids
        )
    if item.input == "text" and message.type != "text":
        return False

    text = message.text or ""
    if item.input == "text" and not visible(text):
        # Nothing written (an empty body, spaces, a zero-width character)
        # answers no question: "• Dónde:" was confirmed with nothing after.
        return False
    if item.one_of and answer_form(text) not in item.one_of:
        return False
    return item.match is None or item.match.search(text.strip()) is not None
