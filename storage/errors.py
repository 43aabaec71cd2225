"""Errors raised by storage backends."""


class StorageError(Exception):
    """A storage operation failed."""


class StorageUnavailable(StorageError):
    """The database cannot be reached now; callers should retry later."""
