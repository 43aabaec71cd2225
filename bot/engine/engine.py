"""The router: which flow handles a message, and what it answers.

Order (DESIGN.md, step 4): a global command first, then the conversation's
active flow, then a flow whose start words match, then the fallback flow.
The engine changes the conversation in place and returns the reply texts;
the dispatcher commits both together.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bot.engine.actions  # noqa: F401  (registers the hooks flows name)
from bot.engine import audience, timeouts
from bot.engine.flows import FlowSpec, load_flows
from bot.engine.interactive import Reply
from bot.engine.machine import CompiledFlow, Turn, compile_flow
from bot.engine.replies import Renderer
from bot.engine.routes import StartWords
from bot.engine.text import command_form
from bot.errors import FlowError
from bot.whatsapp.events import InboundMessage
from storage.base import Conversation

log = logging.getLogger("tracbot.engine")

# One version of the flows: compiled flows, renderer, fallback flow.
Loaded = tuple[dict[str, CompiledFlow], Renderer, CompiledFlow]

# The reply to a command that exists but is not for this number, and what it
# is given besides what every template gets (`tracbot check` holds it to
# that).
UNAVAILABLE = "no_disponible"
UNAVAILABLE_VALUES = frozenset({"command", "typed_command", "audience"})
# Message types that never start or advance a conversation.
SILENT_TYPES = frozenset({"reaction", "system"})
# Bound on flows handing over to each other in one turn; the checker rejects
# cycles, this keeps one that slipped through from spinning.
MAX_HANDOVERS = 4
RESET_TEXT = (
    "Actualizamos esta conversación y tuvimos que empezar de nuevo. "
    "Escribe *AYUDA* para ver los comandos disponibles."
)


@dataclass(slots=True)
class Outcome:
    """What handling one message produced."""

    replies: list[str] = field(default_factory=list)
    flow: str | None = None
    state: str | None = None


class Engine:
    """Compiled flows plus the renderer; shared by every message."""

    def __init__(
        self, flows: dict[str, FlowSpec], renderer: Renderer, services: Any = None
    ) -> None:
        self.services = services
        # Called with each new version (see `twin`).
        self.followers: list[Callable[[Loaded], None]] = []
        self.swap(flows, renderer)

    def swap(self, flows: dict[str, FlowSpec], renderer: Renderer) -> None:
        """Serve new flows and templates from the next message on.

        Everything is compiled before anything is replaced, so a failure
        leaves the old version serving, and the replacement itself happens
        between two awaits: no message sees half of each.

        Raises:
            FlowError: the new flows do not compile.
        """
        self.install(compile_version(flows, renderer))

    def install(self, loaded: Loaded) -> None:
        """Serve a compiled version (`compile_version`) from the next message on."""
        self._serve(loaded)
        for follow in self.followers:
            follow(loaded)

    def _serve(self, loaded: Loaded) -> None:
        self.flows, self.renderer, self.fallback = loaded
        self._words = StartWords(flow.spec for flow in self.flows.values())
        # The commands each role may use, for these flows (audience.context).
        self._menus: dict[str | None, list[dict[str, str]]] = {}

    def twin(
        self, services: Any, call: Callable[[Callable[[], None]], None]
    ) -> tuple[Engine, Callable[[], None]]:
        """This engine's flows with other services, for another thread.

        The twin serves every version this engine is given; `call` runs a
        function on the twin's own loop (its `call_soon_threadsafe`), so a
        new version reaches the twin between two of its messages, never in
        the middle of one.

        Returns:
            The twin, and the function that stops it following.
        """
        twin = Engine.__new__(Engine)
        twin.services = services
        twin.followers = []
        twin._serve((self.flows, self.renderer, self.fallback))

        def follow(loaded: Loaded) -> None:
            call(functools.partial(twin._serve, loaded))

        self.followers.append(follow)
        return twin, lambda: self.followers.remove(follow)

    @classmethod
    def from_dirs(
        cls, flows_dir: Path, templates_dir: Path, services: Any = None
    ) -> Engine:
        """Load and compile every flow of a folder."""
        return cls(load_flows(flows_dir), Renderer(templates_dir), services)

    async def handle(
        self, message: InboundMessage, conversation: Conversation
    ) -> Outcome:
        """Route one message and run it through its flow."""
        if message.type == "system" and message.new_wa_id:
            await self._number_changed(message, conversation)
        identify = getattr(self.services, "identify", None)
        who = None
        if identify is not None and message.type not in SILENT_TYPES:
            who = await identify(message.wa_id)
        token = audience.WHO.set(who)
        try:
            return await self._handle(message, conversation)
        finally:
            audience.WHO.reset(token)

    async def _number_changed(
        self, message: InboundMessage, conversation: Conversation
    ) -> None:
        moved = getattr(self.services, "number_changed", None)
        if moved is None or not message.new_wa_id:
            return
        if await moved(message.wa_id, message.new_wa_id):
            # It lives on under the new number; what this step saves for
            # the old one must not bring a copy of it back.
            conversation.flow = conversation.state = None
            conversation.flow_version = None
            conversation.slots = {}
            conversation.deadline = None

    async def _handle(
        self, message: InboundMessage, conversation: Conversation
    ) -> Outcome:
        if message.type in SILENT_TYPES:
            return Outcome(flow=conversation.flow, state=conversation.state)

        # A deadline that passed before the sweeper saw it still counts: the
        # driver reads the timeout reply, then the answer to a fresh start.
        early: list[str] = []
        if timeouts.expired(conversation):
            early = timeouts.expire(self, conversation)
        early += self._update_version(conversation, message)
        outcome = await self._route(message, conversation)
        outcome.replies = _said_first(early, outcome.replies)
        return outcome

    async def _route(
        self, message: InboundMessage, conversation: Conversation
    ) -> Outcome:
        """Pick the flow that takes the message (DESIGN.md, step 4)."""
        # A caption describes a file; it never starts a command.
        typed = "" if message.media is not None else command_form(message.text)
        chosen = self._global(typed)
        if chosen is not None:
            return await self._start(chosen, message, conversation, keep=True)

        active = self._active(conversation)
        if active is not None:
            turn = self._turn(active, message, conversation)
            await active.run(turn, start=False)
            if not turn.context.get("rejected"):
                return await self._settle(turn, message, conversation)
            if active.spec.name in self._words.said(typed):
                # Its own command again (VINCULAR at "¿Eres tú?"): start over
                # rather than ask the open question once more.
                return await self._start(active, message, conversation)
            other = self._starting(typed, exclude=active, message=message)
            if other is not None and _interrupts(other.spec, message):
                # "necesito ayuda" mid-flow answers like AYUDA: keep the flow.
                keep = other.spec.is_global
                return await self._start(other, message, conversation, keep=keep)
            return await self._reprompt(active, turn, conversation)

        chosen = self._starting(typed, message=message) or self._fallback_for()
        return await self._start(chosen, message, conversation)

    def _global(self, typed: str) -> CompiledFlow | None:
        said = self._words.said(typed)
        for flow in self.flows.values():
            if flow.spec.is_global and flow.spec.name in said:
                return flow
        return None

    def _starting(
        self,
        typed: str,
        exclude: CompiledFlow | None = None,
        message: InboundMessage | None = None,
    ) -> CompiledFlow | None:
        said = self._words.said(typed)
        for flow in self.flows.values():
            if flow is exclude:
                continue
            if flow.spec.name in said or (
                message is not None and audience.started_by(flow.spec, message)
            ):
                return flow
        # No start word first: one command named in a short sentence.
        named = self._words.named(typed, None if exclude is None else exclude.spec.name)
        return self.flows[named] if named is not None else None

    def _fallback_for(self) -> CompiledFlow:
        # Unlinked numbers may have a fallback of their own (the offer to
        # link the account); everyone else gets the general one.
        name = audience.fallback_for(f.spec for f in self.flows.values())
        return self.flows[name] if name else self.fallback

    def _update_version(
        self, conversation: Conversation, message: InboundMessage
    ) -> list[str]:
        """Move a conversation left in an older version of its flow.

        Its state still exists: carry on. Else the new version's `migrate`
        map names where it went, or the driver starts over, told politely.
        """
        if conversation.flow is None:
            return []
        flow = self.flows.get(conversation.flow)
        spec = flow.spec if flow is not None else None
        if spec is not None and conversation.flow_version == spec.version:
            return []
        if spec is not None and conversation.state in spec.states:
            conversation.flow_version = spec.version
            return []
        moved = spec.migrate.get(conversation.state or "") if spec else None
        if spec is not None and moved in spec.states:
            log.info("conversation migrated flow=%s to=%s", spec.name, moved)
            conversation.state, conversation.flow_version = moved, spec.version
            return []

        log.info("conversation reset by a flow change flow=%s", conversation.flow)
        conversation.flow = conversation.state = conversation.flow_version = None
        conversation.slots, conversation.deadline = {}, None
        if spec is not None and spec.migrate_reply:
            # The values of any reply; the slots are gone with the state.
            context = {**self._context(message), "slots": {}}
            return [self.renderer.render_or_apologise(spec.migrate_reply, context)]
        return [RESET_TEXT]

    def _active(self, conversation: Conversation) -> CompiledFlow | None:
        flow = self.flows.get(conversation.flow or "")
        if flow is None or conversation.state not in flow.spec.states:
            return None
        if not audience.allowed(flow.spec):
            # The number is no longer one the flow is for (unlinked through
            # the API mid-flow): its answer went on as a driver's, and a pin
            # read "location saved" with nothing saved. It starts afresh.
            return None
        return flow

    def _turn(
        self, flow: CompiledFlow, message: InboundMessage, conversation: Conversation
    ) -> Turn:
        same_flow = conversation.flow == flow.spec.name
        return Turn(
            flow=flow.spec,
            message=message,
            slots=dict(conversation.slots) if same_flow else {},
            context=self._context(message, conversation),
            # A reply that fails raises: the dispatcher then keeps the state
            # the driver was in and apologises, instead of the step going on
            # with the apology in place of its reply (the answer was lost).
            render=self.renderer.render,
            services=self.services,
            state=conversation.state or "",
            takes_over=lambda: self._takes_over(flow, message),
        )

    def _takes_over(self, flow: CompiledFlow, message: InboundMessage) -> bool:
        """Whether the message, if `flow` did not take it, would start a
        flow in its place (`_route`): `es_comando` asks the same question, or
        a misspelt CANCELAR, which starts nothing, was let through and asked
        again forever."""
        typed = "" if message.media is not None else command_form(message.text)
        if flow.spec.name in self._words.said(typed):
            return True
        other = self._starting(typed, exclude=flow, message=message)
        return other is not None and _interrupts(other.spec, message)

    async def expire(self, conversation: Conversation) -> list[str]:
        """Reset a conversation whose deadline passed while the driver was
        silent; return its flow's timeout reply, rendered with the values of
        any reply (as who the phone is now; no message, so `name` and
        `text` are empty)."""
        identify = getattr(self.services, "identify", None)
        who = await identify(conversation.wa_id) if identify is not None else None
        token = audience.WHO.set(who)
        try:
            return timeouts.expire(self, conversation)
        finally:
            audience.WHO.reset(token)

    def silent_context(self, wa_id: str) -> dict[str, Any]:
        """The values of a reply that no message asked for (a timeout)."""
        return self._values(wa_id, "", "", "timeout", voice_note=False, in_flow=True)

    def _context(
        self, message: InboundMessage, conversation: Conversation | None = None
    ) -> dict[str, Any]:
        # `in_flow`: the driver was in the middle of a flow (CANCELAR says
        # whether there was anything to cancel).
        in_flow = conversation is not None and self._active(conversation) is not None
        return self._values(
            message.wa_id,
            message.profile_name or "",
            message.text or "",
            message.type,
            voice_note=bool(message.media and message.media.voice),
            in_flow=in_flow,
        )

    def _values(
        self,
        wa_id: str,
        name: str,
        text: str,
        message_type: str,
        *,
        voice_note: bool,
        in_flow: bool,
    ) -> dict[str, Any]:
        """What every reply template may read (docs/flows.md)."""
        return {
            "name": name,
            "in_flow": in_flow,
            "text": text,
            "message_type": message_type,
            "voice_note": voice_note,
            "wa_id": wa_id,
            **audience.context(self._menus, (f.spec for f in self.flows.values())),
        }

    async def _start(
        self,
        flow: CompiledFlow,
        message: InboundMessage,
        conversation: Conversation,
        keep: bool = False,
    ) -> Outcome:
        if not audience.allowed(flow.spec):
            return self._unavailable(flow, message, conversation)
        turn = self._turn(flow, message, conversation)
        await flow.run(turn, start=True)
        if (
            keep
            and turn.ended
            and not flow.spec.cancels
            and self._active(conversation) is not None
        ):
            # A one-step global command (AYUDA) answers without abandoning the
            # flow the driver was in the middle of; CANCELAR does abandon it.
            return Outcome(turn.replies, conversation.flow, conversation.state)
        return await self._settle(turn, message, conversation)

    async def _settle(
        self, turn: Turn, message: InboundMessage, conversation: Conversation
    ) -> Outcome:
        """Finish a turn, following `handover` states into the next flow."""
        replies: list[str] = []
        for _ in range(MAX_HANDOVERS):
            target = self._handover(turn)
            if target is None:
                break
            if not audience.allowed(target.spec):
                # Not into a flow this number may not use, whatever the
                # flow before it allows: a linked driver handed to VINCULAR
                # linked their number to another driver's account.
                outcome = self._finish(turn, conversation)
                refused = self._unavailable(target, message, conversation)
                outcome.replies[:0] = replies
                outcome.replies += refused.replies
                return outcome
            replies += turn.replies
            slots = turn.slots
            turn = self._turn(target, message, conversation)
            turn.slots.update(slots)
            await target.run(turn, start=True)
        outcome = self._finish(turn, conversation)
        outcome.replies[:0] = replies
        return outcome

    def _handover(self, turn: Turn) -> CompiledFlow | None:
        if not turn.ended:
            return None
        name = turn.flow.states[turn.state].handover
        target = self.flows.get(name or "")
        if name and target is None:
            log.error("handover to unknown flow=%s from=%s", name, turn.flow.name)
        return target

    def _unavailable(
        self, flow: CompiledFlow, message: InboundMessage, conversation: Conversation
    ) -> Outcome:
        # The command exists but not for this number: say so, and leave the
        # driver where they were.
        context = {
            **self._context(message),
            "command": flow.spec.command or flow.spec.name.upper(),
            # Whether the driver typed the command: a pin shared or a button
            # tapped was answered "Para usar *UBICACION*…", a word never
            # typed (a flow started only by a button has none).
            "typed_command": flow.spec.command is not None and message.type == "text",
            "audience": flow.spec.audience,
            # What every template may read: `{{ slots.x }}` failed here.
            "slots": {},
        }
        text = self.renderer.render_or_apologise(UNAVAILABLE, context)
        log.info("flow not available flow=%s role=%s", flow.spec.name, audience.role())
        return Outcome([text], conversation.flow, conversation.state)

    def _finish(self, turn: Turn, conversation: Conversation) -> Outcome:
        if turn.ended:
            conversation.flow = conversation.state = conversation.flow_version = None
            conversation.slots = {}
            conversation.deadline = None
        else:
            conversation.flow = turn.flow.name
            conversation.state = turn.state
            conversation.flow_version = turn.flow.version
            conversation.slots = turn.slots
            conversation.deadline = timeouts.deadline_for(turn.flow)
        log.debug(
            "turn done flow=%s state=%s replies=%d",
            turn.flow.name,
            turn.state,
            len(turn.replies),
        )
        return Outcome(turn.replies, conversation.flow, conversation.state)

    async def _reprompt(
        self, flow: CompiledFlow, turn: Turn, conversation: Conversation
    ) -> Outcome:
        # The active flow did not take the message: say what it expects, and
        # keep the driver where they were.
        state = flow.spec.states[turn.state]
        template = state.otherwise or state.reply
        if template:
            turn.say(template)
            return Outcome(turn.replies, conversation.flow, conversation.state)

        fallback = self._turn(self.fallback, turn.message, conversation)
        await self.fallback.run(fallback, start=True)
        return Outcome(fallback.replies, conversation.flow, conversation.state)


def compile_version(flows: dict[str, FlowSpec], renderer: Renderer) -> Loaded:
    """Compile a set of flows for `Engine.install`; touches no engine, so it
    may run on any thread.

    Raises:
        FlowError: the flows do not compile.
    """
    compiled = {name: compile_flow(spec) for name, spec in flows.items()}
    return compiled, renderer, _fallback(compiled)


def _fallback(flows: dict[str, CompiledFlow]) -> CompiledFlow:
    # Fallbacks for one audience (`unlinked`) may exist beside the general one.
    found = [
        f for f in flows.values() if f.spec.fallback and f.spec.audience == "anyone"
    ]
    if len(found) != 1:
        names = ", ".join(f.spec.name for f in found) or "none"
        raise FlowError(
            "exactly one flow for anyone (no `audience`, or `audience: "
            f"anyone`) must say `fallback: true`, found: {names}; a fallback "
            "for one audience (vincular.yaml's `unlinked`) does not count"
        )
    return found[0]


def _interrupts(spec: FlowSpec, message: InboundMessage) -> bool:
    """Whether a flow may take over from one in progress that did not
    expect the message: a command may, and what the message started by its
    kind or a button's id; small talk without a command (a thanks, an OK,
    the menu word) never ends a question left open, which is asked again.
    """
    return spec.command is not None or audience.started_by(spec, message)


def _said_first(notes: list[str], replies: list[str]) -> list[str]:
    """`notes` (a timeout's reply, a restart notice) at the top of the first
    reply: one message in answer to one message (DESIGN.md), where the
    notice and the answer went as two."""
    if not notes or not replies:
        return notes + replies
    first = replies[0]
    text = "\n\n".join([*notes, str(first)])
    interactive = getattr(first, "interactive", None)
    return [Reply.of(text, interactive) if interactive else text, *replies[1:]]
