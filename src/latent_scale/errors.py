"""Errors the user can fix, and the exit codes the CLI maps them to."""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Bad model, data, option or image: one sentence for the user, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class Interrupted(Exception):
    """Ctrl-C or SIGTERM; the checkpoint (if asked for) has been saved. Exit code 130."""

    exit_code = EXIT_INTERRUPTED
