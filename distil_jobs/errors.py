"""The one exception type that reaches the user as a one-line message."""

from __future__ import annotations


class DistilError(Exception):
    """A problem the user can fix. The CLI prints `error: <message>` and exits non-zero.

    Messages name the problem and the fix in one line, e.g.
    "column 'txt' not in input data/x.jsonl (columns: id, en, yo): pass --text-column".
    """

    exit_code = 2


class JobFault(DistilError):
    """A fault that is not the user's input: a storage server gone, a training run that diverged.
    Still one line (the traceback would not help), but exit 1: a launcher may retry it."""

    exit_code = 1


class PreemptedError(Exception):
    """Raised when a job stops on a preemption signal after saving its state."""

    exit_code = 75  # EX_TEMPFAIL: the project-wide "preempted, resume me" code


def first_line(e: BaseException | str, limit: int = 200, last: bool = False) -> str:
    """One line of an exception's (or a tool's) message for a one-line error: the first, or with
    `last` the last non-empty line (where tools such as sbatch put the cause); the type if empty."""
    text = str(e).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(e).__name__ if isinstance(e, BaseException) else "(no message)"
    return (lines[-1] if last else lines[0])[:limit]
