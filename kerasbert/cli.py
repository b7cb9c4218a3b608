"""What every command shares: logging, and bad input as one line and exit 2."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile

# Errors that mean "the input is wrong", not "kerasbert is broken". Any
# OSError is the environment's answer about a path the user gave (missing,
# a directory, a name too long, a full disk), not a bug to show a traceback for.
USER_ERRORS = (ValueError, TypeError, OSError, KeyError)
# An error line longer than this is cut: a message may quote a hostile input
# (a megabyte-long column name or path) that nobody wants on their terminal.
MAX_MESSAGE = 2000


def setup(debug=False):
    """Logs ours to stderr: INFO, or DEBUG with `debug`."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # One INFO line per HTTP request (`predict --server`) is noise, not news.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def load_tensorflow(debug=False):
    """Imports TensorFlow, TF Text and Keras, and finds the devices, without their chatter.

    TensorFlow's native libraries write to the process' stderr while they
    load and look for a GPU ("oneDNN custom operations are on", "Could not
    find cuda drivers", "failed call to cuInit"), before its log level
    applies. Unless `debug`, that stream is held aside meanwhile, and shown
    only if the import fails; and TensorFlow's C++ log is off afterwards
    (`TF_CPP_MIN_LOG_LEVEL=3`, unless set already).
    """
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.nullcontext() if debug else _stderr_held():
        import keras  # noqa: F401
        import tensorflow as tf
        import tensorflow_text  # noqa: F401

        tf.config.list_physical_devices()


@contextlib.contextmanager
def _stderr_held():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def run(main, args) -> int:
    """Calls `main(args)`; a user error becomes one line on stderr and status 2.

    With `args.debug` the traceback is shown instead.
    """
    try:
        return main(args) or 0
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def command(parse_args, main):
    """A command line's entry point: `entry(argv=None) -> int`.

    Parses `argv` with `parse_args`, then calls `main(args)` through `run`.

    Example:
    >>> main = cli.command(parse_args, _main)    # in kerasbert/train.py
    """

    def entry(argv=None) -> int:
        return run(main, parse_args(argv))

    return entry


def error_line(error) -> str:
    """`error`'s message as one printable line of at most `MAX_MESSAGE` characters.

    Whitespace runs (newlines included) become one space; other control
    characters (NUL, escape sequences from a hostile file) are shown escaped.
    """
    message = " ".join(str(error).split()) or type(error).__name__
    cut = ""
    if len(message) > MAX_MESSAGE:
        cut = f"... [cut at {MAX_MESSAGE} of {len(message)} characters; --debug shows all]"
        message = message[:MAX_MESSAGE]
    printable = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message
    )
    return printable + cut


def command_parser(module, description) -> ArgumentParser:
    """The parser of `python -m <module>`: one-line usage errors, `--debug`."""
    return ArgumentParser(prog=f"python -m {module}", description=description)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line and exit status 2 like the rest, and `--debug`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show tracebacks")

    def add_config_arguments(self):
        """`--config FILE` and repeatable `--set KEY=VALUE`, for commands that read a run's config."""
        self.add_argument("--config", required=True, help="the run's YAML config")
        self.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set training.epochs=2 (repeatable)",
        )

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
