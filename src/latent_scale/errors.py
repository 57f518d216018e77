"""Errors the user can fix, the exit codes the CLI maps them to, and an exception as one line.

Exit codes: 0 success, 1 internal error (a traceback: a bug), 2 bad input, 130 interrupted.
"""

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Bad model, data, option or image: one sentence for the user, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class Interrupted(Exception):
    """Ctrl-C or SIGTERM; the checkpoint (if asked for) has been saved. Exit code 130."""

    exit_code = EXIT_INTERRUPTED


def one_line(e: BaseException, limit: int = 200, *, named: bool = False) -> str:
    """An exception as one line for a message or a skip list: the OS's own words when it has them, else
    the message's first non-empty line, else the exception's type; at most `limit` characters. `named`
    puts the type first ("MemoryError: ..."), where the type says what the words do not."""
    text = getattr(e, "strerror", None) or str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return (f"{type(e).__name__}: {lines[0]}" if named else lines[0])[:limit]
