"""How every console script ends a run on bad input: one line, a non-zero exit, no traceback.

``rulstm``, ``rulstm-extract``, ``rulstm-import``, ``rulstm-score``, ``rulstm-demo``,
``rulstm-web``, ``rulstm-quickstart``, ``python -m synthetic_kitchen`` and the developer
scripts the docs name (``scripts/*.py``) wrap their ``main`` with :func:`cli_main` (a test
checks every one); an exception that escapes is printed as::

    <prog>: error: <message naming the file / video / row / key / option>

and the process exits with a status that depends on the kind of error, one rule for every
script (docs/architecture.md, "Errors and exit codes"):

* a **usage error** (:class:`UsageError`: an option that does not exist, options that cannot
  be used together, a missing required option) exits with status **2**, like argparse;
* a **data error** (:class:`DataError`: a file, video, row or key that is malformed, missing
  or does not match) exits with status **1**; its one line names the file and the video, row
  or key;
* an **environment error** (:class:`SetupError`: a full disk, a folder that cannot be
  written, a missing package or weights, a locked file) exits with status **1**; its one line
  names the cause (and the file);
* Ctrl-C exits with 130 (SIGTERM during an extraction: 143).

Every exception class of the project derives from exactly one of the three (checked by a
test). Python's own ``OSError``, ``ValueError``, ``LookupError`` and ``ImportError`` are
reported the same way (status 1); any other exception is a bug and says so. ``--debug`` on
the command line (removed before parsing) or ``RULSTM_DEBUG=1`` in the environment re-raises
instead, with the full traceback. The shared contract layer holds this so that the training
and extraction sides, which never import each other, report errors the same way.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

DEBUG_FLAG = "--debug"
DEBUG_ENV = "RULSTM_DEBUG"

#: Exception types that are bad input by nature (their message is the whole story).
USER_ERROR_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    LookupError,
    ImportError,  # a missing optional dependency; the message says what to install
    argparse.ArgumentError,  # jsonargparse raises these with exit_on_error=False
)


class UserError(Exception):
    """Bad input (a file, video, row, key or option): reported as one line, no traceback.

    ``exit_code`` is the process status the console script ends with.
    """

    exit_code = 1


class UsageError(UserError):
    """Arguments that cannot be used together or at all (argparse's exit status 2)."""

    exit_code = 2


class DataError(UserError):
    """Bad input data: a file, video, row or key that is malformed, missing or does not match
    (exit status 1). The message names the file and the video, row or key."""


class SetupError(UserError):
    """The environment stops the run: a full disk, an unwritable folder, a missing package or
    weights, a locked file (exit status 1). The message names the cause."""


class WeightsUnavailableError(SetupError, RuntimeError):
    """Pretrained weights that are neither cached nor downloadable (no network): the message
    names the weights and says how to provide them."""


class Interrupted(UserError):
    """The run was stopped by Ctrl-C (status 130) or SIGTERM (143); what was finished is kept."""

    exit_code = 130


#: The three kinds of error a console script reports (see the module docstring).
ERROR_KINDS: tuple[type[UserError], ...] = (UsageError, DataError, SetupError)


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    """True when ``RULSTM_DEBUG`` is set (not ``0``/empty) or ``--debug`` is in ``argv``."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in {"", "0", "false", "no"}:
        return True
    return argv is not None and DEBUG_FLAG in argv


def one_line(error: BaseException) -> str:
    """The message of ``error`` on a single line.

    KeyError's quotes are dropped; an exception re-raised from a DataLoader worker (whose
    message is the worker's whole traceback) is reduced to the original last line.
    """
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Caught ") and any("Original Traceback" in line for line in lines):
        last = lines[-1]
        # "pkg.Module.SomeError: message" -> "message"
        head, sep, tail = last.partition(": ")
        return tail if sep and "Error" in head.split(".")[-1] else last
    return " ".join(lines)


def _unwrapped(error: BaseException) -> BaseException:
    """The error a configuration link wrapped: jsonargparse reports a failing ``compute_fn``
    as ``Call to compute_fn of link '...' with args (<every argument's repr>) failed: ...``,
    which buries the cause in a screen of parser internals. A configured class whose package
    is missing becomes a :class:`SetupError` naming it (:func:`_missing_package`)."""
    while str(error).startswith("Call to compute_fn of link ") and error.__cause__ is not None:
        error = error.__cause__
    if not isinstance(error, UserError):
        return _missing_package(error) or error
    return error


#: jsonargparse's report of a class (``--trainer.logger MLFlowLogger``) whose package is not
#: installed: Lightning's requirement check says ``Requirement 'mlflow>=1.0.0' not met``.
_MISSING_PACKAGE = re.compile(
    r"class_path '(?P<class_path>[\w.]+)': Requirement '(?P<requirement>[^']+)' not met"
)


def _missing_package(error: BaseException) -> SetupError | None:
    """A configured class whose package is missing, as one line naming the class and the
    package to install, instead of jsonargparse's screen listing every type the option
    accepts; ``None`` for any other error."""
    found = _MISSING_PACKAGE.search(" ".join(str(error).split()))
    if found is None:
        return None
    class_path, requirement = found["class_path"], found["requirement"]
    name = class_path.rpartition(".")[2]
    return SetupError(
        f"{name} ({class_path}) needs the package {requirement}, which is not installed: "
        f"pip install '{requirement}'"
    )


def describe(error: BaseException) -> str:
    """One line for any exception; unexpected types are named and point to ``--debug``."""
    error = _unwrapped(error)
    message = one_line(error)
    if isinstance(error, (UserError, *USER_ERROR_TYPES)):
        return message
    return (
        f"{message} ({type(error).__name__}; rerun with {DEBUG_FLAG} or {DEBUG_ENV}=1 "
        "for the traceback)"
    )


def exit_code_of(error: BaseException) -> int:
    error = _unwrapped(error)
    if isinstance(error, argparse.ArgumentError):
        return 2
    return int(getattr(error, "exit_code", 1))


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors raise :class:`UsageError`, so that
    :func:`cli_main` prints them as its one line (``--help`` still prints and exits 0)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _warning_printer(prog: str) -> Callable[..., None]:
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
        print(f"{prog}: warning: {text}", file=file or sys.stderr, flush=True)

    return show


def cli_main(prog: str) -> Callable[[Callable[..., Any]], Callable[..., int]]:
    """Decorate a console script's ``main(argv=None)`` so that it reports errors as one line.

    The decorated function takes the same ``argv`` (``None``: ``sys.argv[1:]``), strips
    ``--debug`` from it, and returns the exit status instead of raising: the wrapped
    function's own return value (``None`` is 0), a ``SystemExit``'s code (argparse), or the
    status of the error it printed. Warnings are printed as ``<prog>: warning: <text>``.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., int]:
        @functools.wraps(function)
        def wrapper(argv: Sequence[str] | None = None, *args: Any, **kwargs: Any) -> int:
            arguments = list(sys.argv[1:] if argv is None else argv)
            debug = debug_enabled(arguments)
            arguments = [a for a in arguments if a != DEBUG_FLAG]
            try:
                with warnings.catch_warnings():
                    if not debug:
                        warnings.showwarning = _warning_printer(prog)
                    result = function(arguments, *args, **kwargs)
            except SystemExit as stop:  # argparse / jsonargparse already printed their line
                code = stop.code
                return code if isinstance(code, int) else (0 if code is None else 1)
            except KeyboardInterrupt:
                if debug:
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except Exception as error:
                if debug:
                    raise
                print(f"{prog}: error: {describe(error)}", file=sys.stderr, flush=True)
                return exit_code_of(error)
            return 0 if result is None else int(result)

        wrapper.__wrapped_main__ = function  # type: ignore[attr-defined]
        return wrapper

    return decorate
