"""The shared console-script error mechanism: one line, the right exit status, --debug."""

from __future__ import annotations

import warnings

import pytest

from epic_protocol.errors import (
    ArgumentParser,
    UsageError,
    UserError,
    cli_main,
    describe,
    one_line,
)


def _run(function, argv, capsys):
    code = cli_main("prog")(function)(argv)
    return code, capsys.readouterr().err


def test_user_errors_are_one_line_with_status_1(capsys):
    def fails(argv):
        raise FileNotFoundError("feature file not found: x.h5\n(second line)")

    code, err = _run(fails, [], capsys)
    assert code == 1
    assert err == "prog: error: feature file not found: x.h5 (second line)\n"


def test_key_errors_lose_their_quotes_and_usage_errors_exit_2(capsys):
    def missing_key(argv):
        raise KeyError("video 'P01_01' is not in rgb.h5")

    assert _run(missing_key, [], capsys) == (1, "prog: error: video 'P01_01' is not in rgb.h5\n")

    def usage(argv):
        raise UsageError("--only-needed needs --annotations")

    assert _run(usage, [], capsys) == (2, "prog: error: --only-needed needs --annotations\n")


def test_unexpected_errors_are_named_and_point_to_debug(capsys):
    def bug(argv):
        raise ZeroDivisionError("division by zero")

    code, err = _run(bug, [], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("prog: error: division by zero (ZeroDivisionError; rerun with --debug")


def test_debug_flag_and_environment_show_the_traceback(monkeypatch, capsys):
    seen = []

    def fails(argv):
        seen.append(list(argv))
        raise UserError("bad input")

    with pytest.raises(UserError):
        cli_main("prog")(fails)(["--debug", "--x", "1"])
    assert seen[-1] == ["--x", "1"]  # the flag is not passed on
    monkeypatch.setenv("RULSTM_DEBUG", "1")
    with pytest.raises(UserError):
        cli_main("prog")(fails)([])
    monkeypatch.setenv("RULSTM_DEBUG", "0")
    assert _run(fails, [], capsys) == (1, "prog: error: bad input\n")


def test_return_values_system_exit_and_interrupts(capsys):
    assert _run(lambda argv: None, [], capsys) == (0, "")
    assert _run(lambda argv: 3, [], capsys) == (3, "")

    def interrupted(argv):
        raise KeyboardInterrupt

    assert _run(interrupted, [], capsys) == (130, "prog: interrupted\n")


def test_argument_parser_errors_are_one_line(capsys):
    def parse(argv):
        parser = ArgumentParser(prog="prog")
        parser.add_argument("--out", required=True)
        parser.parse_args(argv)

    code, err = _run(parse, [], capsys)
    assert code == 2
    assert err == "prog: error: the following arguments are required: --out (see prog --help)\n"


def test_warnings_are_one_line(capsys):
    def warns(argv):
        warnings.warn("rgb features are 1024-d\nin the released data", UserWarning, stacklevel=1)

    assert _run(warns, [], capsys) == (
        0,
        "prog: warning: rgb features are 1024-d in the released data\n",
    )


def test_errors_re_raised_by_a_dataloader_worker_keep_their_message():
    wrapped = KeyError(
        "Caught MissingFeaturesError in DataLoader worker process 0.\nOriginal Traceback "
        '(most recent call last):\n  File "x.py", line 1, in f\n'
        "epic_protocol.features.MissingFeaturesError: rgb.h5: frame 9 of video 'v' is past "
        "the end"
    )
    assert one_line(wrapped) == "rgb.h5: frame 9 of video 'v' is past the end"
    assert describe(wrapped) == one_line(wrapped)


def test_a_failing_configuration_link_reports_its_cause(capsys):
    def link_fails(argv):
        try:
            raise ValueError("actions.csv:3: expected 4 columns, got ['1', '1', '0']")
        except ValueError as cause:
            raise ValueError(
                "Call to compute_fn of link 'from_the_data(data) --> model.net.init_args."
                "num_classes' with args ({Train dataloader: None} {Validation dataloader: "
                f"None}}) failed: {cause}"
            ) from cause

    code, err = _run(link_fails, [], capsys)
    assert (code, err) == (
        1,
        "prog: error: actions.csv:3: expected 4 columns, got ['1', '1', '0']\n",
    )
