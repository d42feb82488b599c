r"""atlas-train: train a decoder from gin files (t5x-style command line).

  atlas-train --gin_file=gin/runs/smoke.gin --model_dir=/tmp/smoke
  atlas-train --gin_file=gin/models/scale0.gin --gin_file=gin/runs/paper_base.gin \
      --gin.make_train_pipeline.mixture="'12v0'" --gin.train.total_steps=20000 --model_dir=runs/s0

(`python scripts/train.py ...` is the same command.)

Flags:
  --gin_file (repeatable), --gin_bindings (repeatable) and the shorthand --gin.NAME=VALUE
  (same as --gin_bindings=NAME=VALUE); gin files are looked up relative to the working directory
  and the repository root (so `include 'gin/paper.gin'` works from anywhere).
  --model_dir: the run folder; rerunning with the same folder resumes from its newest checkpoint.
  --coordinator_address / --num_processes / --process_id: multi-host start
  (partitioning.maybe_initialize_distributed).
  --verbosity (absl): log level (default INFO: a progress line per train.jsonl row when stderr is
  not a terminal, t5x style; a progress bar when it is); --helpfull lists every absl flag.
  --verbose_libraries: also show orbax/jax INFO lines and TensorFlow's C++ log (off by default).

The trainer's own configurables (train, ModelConfig, MeshConfig, make_schedule, make_optimizer,
make_synthetic_pipeline) are always known. Those of atlas_t5x.data.pipeline and
atlas_t5x.eval.callback load TensorFlow, so they are imported by a gin `import` line or, when a
config names them without one, on demand.

Exit codes: 0 finished or preempted (SIGTERM → checkpoint saved), 1 NaN/Inf loss, 2 bad input
(unknown flag, unknown gin file or binding, a gin value that does not parse or has the wrong type,
mesh/batch mismatch, checkpoint of another model, every checkpoint damaged, a model_dir held by
another trainer or that cannot be read or written, corrupt training or evaluation data, a restart
with another schedule, mixture, vocabulary or init_from without --gin.train.allow_config_change=True
(the message lists each change, old and new), an init_from without a checkpoint, ...).

In-process use: `main(argv)` may be called more than once in one process (tests do); each call
resets the absl flags and the gin config first. The flags live in absl's global `FLAGS`.
"""

from __future__ import annotations

import importlib
import logging as std_logging
import os
import sys
import tokenize
from pathlib import Path

from atlas_t5x.cli import common

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND = "atlas-train"
HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")

_GIN_SHORTHAND = "--gin."
_flags_defined = False


class BadInput(common.UsageError):
    """A problem with the command line or configuration (exit code 2)."""


def define_flags():
    """Defines this command's flags on absl's global FLAGS (once per process) and returns FLAGS.

    Deferred to the first call so that importing this module needs neither absl nor gin (a
    fitter-only install gets `require_training_stack`'s one-line message instead)."""
    global _flags_defined
    from absl import flags

    if not _flags_defined:
        flags.DEFINE_multi_string("gin_file", [], "gin config file(s), parsed in order")
        flags.DEFINE_multi_string("gin_bindings", [], "gin binding(s), applied after the files")
        flags.DEFINE_multi_string("gin_search_paths", [], "extra folders to resolve gin files and includes")
        flags.DEFINE_string("model_dir", None, "run folder: logs/, tb/, checkpoints/, config.gin")
        flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)")
        flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)")
        flags.DEFINE_integer("process_id", None, "index of this process (multi-host)")
        flags.DEFINE_boolean("verbose_libraries", False, "also show the INFO lines of orbax/jax and "
                             "TensorFlow's C++ log (off: only atlas_t5x's progress lines and warnings)")
        _flags_defined = True
    return flags.FLAGS


def rewrite_gin_shorthand(argv: list[str]) -> list[str]:
    """`--gin.train.total_steps=10` → `--gin_bindings=train.total_steps=10` (t5x convention)."""
    out = []
    for arg in argv:
        if arg.startswith(_GIN_SHORTHAND):
            binding = arg[len(_GIN_SHORTHAND):]
            if "=" not in binding:
                raise BadInput(f"{arg!r}: expected --gin.NAME=VALUE")
            out.append(f"--gin_bindings={binding}")
        else:
            out.append(arg)
    return out


# Configurables of these modules load TensorFlow, so they are imported only when a config names
# them: by a gin `import` line (t5x convention, e.g. gin/runs/paper_base.gin) or, failing that, on
# demand when parsing finds a configurable it does not know.
ON_DEMAND_MODULES = ("atlas_t5x.data.pipeline", "atlas_t5x.eval.callback")


def register_configurables() -> None:
    """Imports the trainer's own gin configurables."""
    import atlas_t5x.data.synthetic  # noqa: F401  make_synthetic_pipeline
    import atlas_t5x.trainer  # noqa: F401  train, ModelConfig, MeshConfig, make_schedule, ...


def _keep_unless_gin_search_noise(record: std_logging.LogRecord) -> bool:
    return not (record.pathname.endswith("resource_reader.py") and str(record.msg).startswith("Path not found"))


def quiet_gin_search_errors() -> None:
    """Drops gin's "Path not found" ERROR lines: it logs one for every search folder that lacks an
    included file, even when the next folder has it (a missing file is still reported, as BadInput)."""
    std_logging.getLogger().addFilter(_keep_unless_gin_search_noise)  # once: addFilter skips a duplicate


def without_gin_call_context(message: str) -> str:
    """The error without the "In call to configurable 'train' (<function ...>)" lines gin appends."""
    return "\n".join(line for line in message.splitlines() if not line.lstrip().startswith("In call to configurable"))


def check_gin_files(files: list[str], search_paths: list[str]) -> None:
    """BadInput naming the first gin file that is in none of the search folders."""
    for f in files:
        if not any(Path(base, f).is_file() for base in [os.getcwd(), str(REPO_ROOT), *search_paths]):
            raise BadInput(f"gin file {f!r} not found (looked in {os.getcwd()}, {REPO_ROOT} and --gin_search_paths)")


class _UnknownConfigurable(BadInput):
    pass


def _parse(files: list[str], bindings: list[str]) -> None:
    import gin

    def fail(where: str, err: Exception):
        kind = _UnknownConfigurable if "No configurable matching" in str(err) else BadInput
        if isinstance(err, tokenize.TokenError):  # args: (message, (line, column))
            raise kind(f"{where}: cannot parse the value: {err.args[0]}") from err
        raise kind(f"{where}: {err}") from err

    # gin's unknown name / missing file / parse errors; tokenize.TokenError: an unclosed bracket.
    parse_errors = (ValueError, OSError, SyntaxError, tokenize.TokenError)
    try:
        gin.parse_config_files_and_bindings(files, None, finalize_config=False)
    except parse_errors as err:
        fail("gin file", err)
    for binding in bindings:  # one at a time, so an error names the binding
        try:
            gin.parse_config(binding)
        except parse_errors as err:
            fail(f"gin binding {binding!r}", err)


def parse_gin(files: list[str], bindings: list[str], search_paths: list[str]) -> None:
    """Parses gin files then bindings; unknown files/configurables/parameters → BadInput naming them."""
    import gin

    for path in [os.getcwd(), str(REPO_ROOT), *search_paths]:
        gin.add_config_file_search_path(path)
    check_gin_files(files, search_paths)
    try:
        _parse(files, bindings)
    except _UnknownConfigurable:
        for module in ON_DEMAND_MODULES:
            importlib.import_module(module)
        gin.clear_config()
        _parse(files, bindings)
    try:
        gin.finalize()
    except (ValueError, TypeError) as err:  # e.g. an undefined %MACRO
        raise BadInput(f"gin config (files {files}, gin bindings {bindings}): {err}") from err


def print_help(full: bool = False) -> None:
    """The docstring and this command's flags (all absl flags with --helpfull) on stdout."""
    FLAGS = define_flags()
    print(__doc__.strip())
    print("\nflags:")
    print(FLAGS.module_help(__name__))
    if full:
        print("\nall absl flags:")
        print(FLAGS.get_help())


def parse_flags(args: list[str]):
    """Parses `args` (without the program name) into absl's FLAGS, reset first; bad flags → BadInput."""
    from absl import flags

    FLAGS = define_flags()
    FLAGS.unparse_flags()  # a second main() in one process starts from the defaults
    try:
        positional = FLAGS([COMMAND, *rewrite_gin_shorthand(args)])
    except flags.Error as err:
        raise BadInput(str(err)) from err
    if len(positional) > 1:
        raise BadInput(f"unexpected arguments {positional[1:]}")
    return FLAGS


def train_from_flags(FLAGS) -> int:
    """Trains the run the parsed flags describe; returns the exit code (BadInput → caller)."""
    import gin
    from absl import logging

    if not FLAGS.model_dir:
        raise BadInput("--model_dir is required")
    logging.use_absl_handler()
    if not FLAGS["verbosity"].present:  # INFO: the trainer's progress lines (absl's default)
        logging.set_verbosity(logging.INFO)
    from atlas_t5x import train_progress

    # Before TensorFlow is imported: TF_CPP_MIN_LOG_LEVEL is read then.
    train_progress.quiet_library_logs(FLAGS.verbose_libraries)
    check_gin_files(FLAGS.gin_file, FLAGS.gin_search_paths)  # before the (slow) imports
    quiet_gin_search_errors()
    gin.clear_config()  # a previous main() in this process left its (finalized) config
    register_configurables()
    parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)

    from atlas_t5x import checkpoints, partitioning, run_lock, trainer

    if FLAGS.coordinator_address or FLAGS.num_processes is not None or FLAGS.process_id is not None:
        partitioning.maybe_initialize_distributed(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    else:
        partitioning.maybe_initialize_distributed()  # gin may configure it (e.g. auto_detect on TPU)

    try:
        result = trainer.train(FLAGS.model_dir)
    except trainer.NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (checkpoints.CheckpointMismatchError, ValueError, OSError, run_lock.RunLockedError) as err:
        # OSError: a model_dir / init_from / data path that is missing, unwritable or unreachable.
        # ValueError includes resume.ConfigChangedError (a restart with changed settings, each listed).
        raise BadInput(without_gin_call_context(str(err))) from err
    except checkpoints.NoRestorableCheckpointError as err:
        raise BadInput(str(err)) from err
    except TypeError as err:  # a gin value of the wrong type reaching the code ('abc' for a number)
        raise BadInput(f"{without_gin_call_context(str(err))} (is a gin binding's value of the wrong "
                       "type? e.g. a quoted string where a number belongs)") from err

    import jax

    if jax.process_index() == 0:
        status = "preempted (SIGTERM): checkpoint saved at" if result.preempted else "finished at"
        print(f"{status} step {result.step}; logs in {Path(FLAGS.model_dir) / 'logs' / 'train.jsonl'}")
        if result.last_log:
            row = result.last_log
            mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
            print(f"  loss {row['loss']:.4f} nats/token, {row['tokens']:,} tokens, "
                  f"{row['tokens_per_s']:,.0f} tokens/s, {row['flops_per_s']:.3g} FLOP/s{mfu}")
    return 0


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    flag_args = args[:args.index("--")] if "--" in args else args
    common.require_training_stack(COMMAND)
    if any(a in HELP_FLAGS for a in flag_args):
        print_help(full="--helpfull" in flag_args)
        return common.EXIT_OK
    return train_from_flags(parse_flags(args))


def main(argv: list[str] | None = None) -> int:
    """atlas-train; `argv` without the program name (default sys.argv[1:]). Returns the exit code:
    bad input (BadInput, a common.UsageError) → one line and 2, Ctrl-C → 130."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
