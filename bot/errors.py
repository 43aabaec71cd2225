"""The exceptions of tracbot: one base class, one subclass per audience."""


class TracbotError(Exception):
    """Base class of every error tracbot raises on purpose."""


class ConfigError(TracbotError):
    """config.yaml or the environment is invalid; the message says where."""


class FlowError(TracbotError):
    """A flow or template is invalid; the message names file and line."""


class RenderError(TracbotError):
    """A reply template failed at run time."""
