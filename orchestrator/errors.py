"""Errors a user can fix. The CLI prints them without a traceback and exits with status 2."""


class UserError(Exception):
    """Bad input: the message names the file or field, what is wrong, and the fix."""
