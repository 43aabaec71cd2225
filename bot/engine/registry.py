"""The named conditions and actions that flow files may use.

A flow says `if: [rut_valido]` or `do: [vincular_cuenta]`; the names resolve
here. Register a new one with a decorator in any module imported at start:

    @condition("tiene_viajes")
    async def has_trips(turn: Turn) -> bool:
        return bool(await turn.services.business.query("active_trips", ...))

Each receives the `Turn` of the message being handled and may be a plain
function or a coroutine function. Conditions return a bool; actions return
nothing and change `turn.slots` or call services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.engine.machine import Turn

Hook = Callable[["Turn"], Any | Awaitable[Any]]

CONDITIONS: dict[str, Hook] = {}
ACTIONS: dict[str, Hook] = {}
# The slots each action may set, so the checker knows what templates can use.
PROVIDES: dict[str, tuple[str, ...]] = {}
# The conditions of which an action needs one on its own transition, because
# it cannot take every message (a RUT parsed from the text, a location).
NEEDS: dict[str, tuple[str, ...]] = {}


def condition(name: str) -> Callable[[Hook], Hook]:
    """Register a condition under the name flows use for it."""
    return _register(CONDITIONS, name)


def action(
    name: str, provides: Iterable[str] = (), needs: Iterable[str] = ()
) -> Callable[[Hook], Hook]:
    """Register an action under the name flows use for it.

    Args:
        provides: the slots the action sets, for `tracbot check`.
        needs: conditions of which `tracbot check` wants one in the `if` of
            every transition that runs the action: those that tell a
            message it can take.
    """
    PROVIDES[name] = tuple(provides)
    NEEDS[name] = tuple(needs)
    return _register(ACTIONS, name)


def _register(table: dict[str, Hook], name: str) -> Callable[[Hook], Hook]:
    def decorate(fn: Hook) -> Hook:
        if name in table and table[name] is not fn:
            raise ValueError(f"{name!r} is already registered")
        table[name] = fn
        return fn

    return decorate
