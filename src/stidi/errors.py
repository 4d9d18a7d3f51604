"""The project's own exception types.

Every failure a user can cause (bad data, bad configuration, a corrupt model file) is
raised as a subclass of :class:`StidiError`, whose message names the file, field or
value at fault and says what to do. The CLI turns these into one-line messages and
exit status 2 instead of a traceback.
"""


class StidiError(Exception):
    """Base class of every error stidi reports to its users."""


class DataError(StidiError):
    """A dataset could not be fetched, verified or parsed."""


class ConfigError(StidiError):
    """A configuration field has a wrong name, type or value."""


class ModelFileError(StidiError):
    """A model or checkpoint file is missing, corrupt or does not match its config."""
