"""The one exception type that reaches the user as a one-line message."""

from __future__ import annotations


class DistilError(Exception):
    """A problem the user can fix. The CLI prints `error: <message>` and exits non-zero.

    Messages name the problem and the fix in one line, e.g.
    "column 'txt' not in input data/x.jsonl (columns: id, en, yo): pass --text-column".
    """

    exit_code = 2


class PreemptedError(Exception):
    """Raised when a job stops on a preemption signal after saving its state."""

    exit_code = 75  # EX_TEMPFAIL: the project-wide "preempted, resume me" code
