"""What every command shares: logging, and bad input as one line and exit 2."""

from __future__ import annotations

import logging
import os
import sys

# Errors that mean "the input is wrong", not "kerasbert is broken".
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError, KeyError)


def setup(debug=False):
    """Quiet TensorFlow's start-up chatter and log ours to stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run(main, args) -> int:
    """Calls `main(args)`; a user error becomes one line on stderr and status 2.

    With `args.debug` the traceback is shown instead.
    """
    try:
        return main(args) or 0
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
