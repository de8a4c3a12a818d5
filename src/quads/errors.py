"""The one exception type users see: every bad input is reported as a QuadsError with a clear message."""


class QuadsError(Exception):
    """A problem with the user's input (file, config, data) explained in plain words; the CLI prints it
    without a traceback and exits with status 2."""


class AudioError(QuadsError):
    """An audio file that cannot be used: missing, empty, corrupt or in an unsupported format."""


class DataError(QuadsError):
    """A corpus file (CSV, JSONL, manifest) that is missing or malformed; the message names file and line."""


class ConfigError(QuadsError):
    """A configuration key or value that is not valid; the message names it and suggests the closest."""
