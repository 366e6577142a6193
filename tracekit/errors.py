"""The one exception type for expected failures (bad input, missing tools)."""


class TracekitError(Exception):
    """An expected failure, reported to the user as one sentence with exit code 1.

    The message must be a complete sentence that names the missing or wrong thing
    and, where there is one, the way out.
    """
