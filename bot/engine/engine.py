"""The router: which flow handles a message, and what it answers.

Order (DESIGN.md, step 4): a global command first, then the conversation's
active flow, then a flow whose start words match, then the fallback flow.
The engine changes the conversation in place and returns the reply texts;
the dispatcher commits both together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.flows import FlowSpec, load_flows
from bot.engine.machine import CompiledFlow, Turn, compile_flow
from bot.engine.replies import Renderer
from bot.engine.text import close_enough, normalize, words
from bot.errors import FlowError
from bot.whatsapp.events import InboundMessage
from storage.base import Conversation

log = logging.getLogger("tracbot.engine")

# Message types that never start or advance a conversation.
SILENT_TYPES = frozenset({"reaction", "system"})


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
        self.flows = {name: compile_flow(spec) for name, spec in flows.items()}
        self.renderer = renderer
        self.services = services
        self.fallback = self._fallback()

    @classmethod
    def from_dirs(
        cls, flows_dir: Path, templates_dir: Path, services: Any = None
    ) -> Engine:
        """Load and compile every flow of a folder."""
        return cls(load_flows(flows_dir), Renderer(templates_dir), services)

    def _fallback(self) -> CompiledFlow:
        found = [f for f in self.flows.values() if f.spec.fallback]
        if len(found) != 1:
            names = ", ".join(f.spec.name for f in found) or "none"
            raise FlowError(f"exactly one flow must say `fallback: true` ({names})")
        return found[0]

    async def handle(
        self, message: InboundMessage, conversation: Conversation
    ) -> Outcome:
        """Route one message and run it through its flow."""
        if message.type in SILENT_TYPES:
            return Outcome(flow=conversation.flow, state=conversation.state)

        typed = normalize(message.text)
        chosen = self._global(typed)
        if chosen is not None:
            return await self._start(chosen, message, conversation, keep=True)

        active = self._active(conversation)
        if active is not None:
            turn = self._turn(active, message, conversation)
            await active.run(turn, start=False)
            if not turn.context.get("rejected"):
                return self._finish(turn, conversation)
            other = self._starting(typed, exclude=active)
            if other is not None:
                return await self._start(other, message, conversation)
            return await self._reprompt(active, turn, conversation)

        chosen = self._starting(typed) or self.fallback
        return await self._start(chosen, message, conversation)

    def _global(self, typed: str) -> CompiledFlow | None:
        for flow in self.flows.values():
            if flow.spec.is_global and _starts(flow.spec, typed):
                return flow
        return None

    def _starting(
        self, typed: str, exclude: CompiledFlow | None = None
    ) -> CompiledFlow | None:
        for flow in self.flows.values():
            if flow is not exclude and _starts(flow.spec, typed):
                return flow
        return None

    def _active(self, conversation: Conversation) -> CompiledFlow | None:
        flow = self.flows.get(conversation.flow or "")
        if flow is None or conversation.state not in flow.spec.states:
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
            context=self._context(message),
            render=self.renderer.render_or_apologise,
            services=self.services,
            state=conversation.state or "",
        )

    def _context(self, message: InboundMessage) -> dict[str, Any]:
        return {
            "name": message.profile_name or "",
            "text": message.text or "",
            "message_type": message.type,
            "voice_note": bool(message.media and message.media.voice),
            "wa_id": message.wa_id,
        }

    async def _start(
        self,
        flow: CompiledFlow,
        message: InboundMessage,
        conversation: Conversation,
        keep: bool = False,
    ) -> Outcome:
        turn = self._turn(flow, message, conversation)
        await flow.run(turn, start=True)
        if keep and turn.ended and self._active(conversation) is not None:
            # A one-step global command (AYUDA) answers without abandoning the
            # flow the driver was in the middle of.
            return Outcome(turn.replies, conversation.flow, conversation.state)
        return self._finish(turn, conversation)

    def _finish(self, turn: Turn, conversation: Conversation) -> Outcome:
        if turn.ended:
            conversation.flow = conversation.state = conversation.flow_version = None
            conversation.slots = {}
        else:
            conversation.flow = turn.flow.name
            conversation.state = turn.state
            conversation.flow_version = turn.flow.version
            conversation.slots = turn.slots
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


def _starts(spec: FlowSpec, typed: str) -> bool:
    """Whether a normalised text is one of the flow's start words."""
    if not typed or not spec.start:
        return False
    if typed in spec.start:
        return True
    first = words(typed)[:1]
    return bool(first) and any(close_enough(first[0], w) for w in spec.start)
