"""The one exception type the engine raises for bad input."""

from __future__ import annotations


class ModelError(Exception):
    """Bad input: a model, feed or data file that cannot be used.

    ``str(err)`` is one line that names the file (when there is one) and the problem,
    fit to show to a user as is.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        self.problem = message
        text = f"{path}: {message}" if path else message
        super().__init__(" ".join(text.split()))


class Cancelled(Exception):
    """A long computation (calibration, analysis) stopped because its cancel check returned True."""
