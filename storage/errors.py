"""Errors raised by storage backends."""


class StorageError(Exception):
    """A storage operation failed."""


class StorageUnavailable(StorageError):
    """The database cannot be reached now; callers should retry later."""


class KeyInUse(StorageError):
    """An Idempotency-Key already kept by another call; nothing was written."""


class EventDone(StorageError):
    """An inbox event committed as done already (by another process that
    took the same phone); the step that tried again wrote nothing."""
