"""Named conditions and actions that flow files use, one module per domain.

Importing this package registers them (see `bot.engine.registry`).
"""

from bot.engine.actions import tracmin

__all__ = ["tracmin"]
