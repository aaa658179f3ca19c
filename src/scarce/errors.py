"""The one exception type users see: a message that names the key, file or value that was wrong."""


class ScarceError(Exception):
    """Bad input or a failed run, explained for the user. The CLI prints it without a traceback."""


def format_validation_error(e) -> str:
    """A pydantic ValidationError as one `  key: message (got value)` line per error."""
    lines = []
    for err in e.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        given = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        lines.append(f"  {key}: {err['msg']}{given}")
    return "\n".join(lines)
