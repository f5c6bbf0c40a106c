"""Errors a user can fix. The CLI prints them without a traceback and exits with status 2."""
import sys


class UserError(Exception):
    """Bad input: the message names the file or field, what is wrong, and the fix."""


def user_errors() -> tuple[type[Exception], ...]:
    """What the CLI prints as one line: UserError, and the model zoo's own `models.pretrained.WeightsError`
    (the zoo imports nothing from the orchestrator) once the zoo has loaded it: looked up, not imported,
    so that a command that builds no model imports no torch."""
    pretrained = sys.modules.get("models.pretrained")
    return (UserError,) + ((pretrained.WeightsError,) if pretrained is not None else ())
