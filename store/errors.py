"""Errors the store raises for bad input (the CLI turns them into one `error:` line and exit code 2)."""


class InputError(ValueError):
    """Something the user asked for does not exist or is malformed."""
