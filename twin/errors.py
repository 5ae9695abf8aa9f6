"""The exception tree of the twin package."""


class TwinError(Exception):
    """Base class of every error the twin raises."""


class ParameterError(TwinError, ValueError):
    """A parameter file or parameter value is malformed; the message names file and field."""


class LimitError(TwinError):
    """An operating limit was violated where the caller asked for failure instead of saturation."""
