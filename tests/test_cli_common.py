"""The shared command-line conventions: deprecated spellings, unknown flags, exit codes."""

import subprocess
import sys

import pytest

from atlas_t5x.cli import common


def make_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog="atlas-example")
    parser.add_argument("--time_budget", type=float, default=5.0, deprecated=("--time-budget",))
    parser.add_argument("--no_select", action="store_true", deprecated=("--no-select", "--noselect"))
    parser.add_argument("--out", required=True)
    return parser


def test_new_spelling_parses_without_warning(capsys):
    args = make_parser().parse_args(["--time_budget", "3", "--out=x"])
    assert args.time_budget == 3.0 and args.no_select is False and args.out == "x"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [["--time-budget=7", "--no-select"], ["--time-budget", "7", "--noselect"]])
def test_old_spelling_sets_the_same_field_and_names_the_new_flag(capsys, argv):
    args = make_parser().parse_args(argv + ["--out", "x"])
    assert args.time_budget == 7.0 and args.no_select is True
    err = capsys.readouterr().err
    assert "--time-budget is deprecated" in err and "use --time_budget" in err
    assert "use --no_select" in err


def test_deprecated_spellings_are_hidden_from_help():
    text = make_parser().format_help()
    assert "--time_budget" in text and "--time-budget" not in text


def test_unknown_flag_exits_2_naming_the_closest_flag(capsys):
    with pytest.raises(SystemExit) as raised:
        make_parser().parse_args(["--out=x", "--time_budgt=3"])
    assert raised.value.code == common.EXIT_USAGE
    assert "did you mean --time_budget" in capsys.readouterr().err


def test_run_main_maps_usage_errors_and_interrupts(capsys):
    def bad(argv):
        raise common.UsageError("model_dir 'x' is not a directory")

    def interrupted(argv):
        raise KeyboardInterrupt

    assert common.run_main(bad, []) == common.EXIT_USAGE
    assert "model_dir 'x' is not a directory" in capsys.readouterr().err
    assert common.run_main(interrupted, []) == common.EXIT_INTERRUPTED
    assert common.run_main(lambda argv: 0, []) == 0


def test_require_training_stack_names_the_extra(monkeypatch):
    monkeypatch.setattr(common, "missing_modules", lambda modules: ["tensorflow", "seqio"])
    with pytest.raises(common.UsageError, match=r"pip install 'atlas_t5x\[train\]'"):
        common.require_training_stack("atlas-train")


def test_progress_outside_a_terminal_prints_a_first_and_last_line():
    code = ("from atlas_t5x.cli.common import progress\n"
            "print(sum(progress(range(5), 'bootstrap', total=5)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "10"
    assert "bootstrap: started (5)" in done.stderr and "bootstrap: done, 5 in" in done.stderr
