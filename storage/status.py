"""The forward-only rule of outbound message statuses.

Status webhooks arrive in any order and some more than once; a message's
status only ever moves forward along `STATUS_RANK`, so a late `sent` never
undoes a `read`. The server backends apply this rule under a row lock.
"""

from __future__ import annotations

from storage.base import STATUS_RANK

# A device may still report delivery after another one reported a failure
# (CLOUD_API.md §3), so these statuses may follow `failed`.
AFTER_FAILED = frozenset({"delivered", "read", "played"})


def advances(current: str, new: str) -> bool:
    """Return whether a status webhook moves a message forward."""
    if current == "failed":
        return new in AFTER_FAILED
    if new == "failed":
        # Read is final: a message the driver read did not fail for them,
        # and a late failure report must not undo that.
        return STATUS_RANK.get(current, -1) < STATUS_RANK["read"]
    return STATUS_RANK.get(new, -1) > STATUS_RANK.get(current, -1)
