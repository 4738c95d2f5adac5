"""How a distil-jobs process ends: one exit code per outcome, and nothing after it can change it.

Launchers act on the code: 0 done, 2 a usage error (never retried), 75 preempted after saving
(requeued, resumed), 1 anything else. A process must therefore leave with exactly that code.

Plain `sys.exit` does not guarantee it. At interpreter finalisation, native thread pools that are
still alive (Arrow's I/O threads releasing Python buffers, seen here; gloo, OpenMP, tokenizers)
may try to take the GIL; CPython then ends those threads with a forced unwind, which a C++
`noexcept` frame turns into `std::terminate`: "terminate called without an active exception"
and exit 134, at random, after the job already printed its result. So every entry point
ends through `exit_process`: Python-level clean-up runs (atexit handlers: logging, wandb,
multiprocessing), the streams are flushed, and the process leaves with `os._exit`, before
finalisation can race those threads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

OK = 0
FAILURE = 1  # a bug or an environment fault: a launcher may retry
USAGE = 2  # the user must change something: never retried
PREEMPTED = 75  # EX_TEMPFAIL: state saved, rerun the same command to resume
INTERRUPTED = 130  # Ctrl-C


def code_of(exit: SystemExit) -> int:
    """The integer a SystemExit stands for (`sys.exit("msg")` means 1, as in CPython)."""
    if exit.code is None:
        return OK
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)
    return FAILURE


def exit_process(code: int) -> NoReturn:
    """Clean up what Python registered, flush, and leave with `code` without interpreter finalisation."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):  # closed or missing: nothing to flush
                stream.flush()
        os._exit(code)


def run_and_exit(main: Callable[[], Any]) -> NoReturn:
    """Run `main` (which may raise SystemExit, as click does) and exit the process with its code."""
    try:
        main()
        code = OK
    except SystemExit as e:
        code = code_of(e)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except BaseException:
        traceback.print_exc()
        code = FAILURE
    exit_process(code)
