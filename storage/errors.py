"""Errors raised by storage backends."""


class StorageError(Exception):
    """A storage operation failed."""


class StorageUnavailable(StorageError):
    """The database cannot be reached now; callers should retry later."""


class KeyInUse(StorageError):
    """An Idempotency-Key already kept by another call; nothing was written."""
