"""The one exception type users see: a message that names the key, file or value that was wrong."""


class ScarceError(Exception):
    """Bad input or a failed run, explained for the user. The CLI prints it without a traceback."""
