"""User-facing errors.

Anything a user can fix (a bad spec, a missing file, a source that runs dry) raises a
`StrcvitError`; the CLI prints its one-paragraph message and exits with code 2 instead of
showing a traceback. Programming errors stay ordinary exceptions so they remain debuggable.
"""

from __future__ import annotations


class StrcvitError(Exception):
    """An error caused by the user's input; the message says what to change."""

    exit_code = 2


class SpecError(StrcvitError):
    """The stream spec is invalid (wrong key, type, value, or an unmeetable schedule)."""


class SourceError(StrcvitError):
    """A data source cannot deliver what the spec asks for."""


class StreamError(StrcvitError):
    """A directory is not a valid built stream."""
