"""Beam plumbing shared by the preprocessing pipelines: options and readable failures."""

from __future__ import annotations

import re
from typing import Callable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from atlas_t5x.data import madlad
from atlas_t5x.data import stats as stats_lib

# Errors raised inside a worker that describe bad input (file, field, value) rather than a bug.
INPUT_ERRORS: tuple[type[Exception], ...] = (madlad.CorpusError, stats_lib.StatsError)
_REMOTE_INPUT_ERROR = re.compile(r"(?:CorpusError|StatsError): (?P<message>.+?)(?: \[while running .*\])?$",
                                 re.MULTILINE)


class PreprocessError(ValueError):
    """Bad input for a preprocessing pipeline (the CLIs exit with status 2)."""


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line flags the script did not consume.

    With no flags this is the in-process DirectRunner (one worker); `--direct_num_workers=2
    --direct_running_mode=multi_processing` runs two local worker processes, and `--runner=
    DataflowRunner --project=... --region=... --temp_location=gs://...` the same code on a cluster.
    `save_main_session` stays off: the pipelines use only importable atlas_t5x functions.
    """
    return PipelineOptions(list(beam_args))


def input_error_message(err: BaseException) -> str | None:
    """The bad-input message carried by a pipeline failure, or None if it is not bad input.

    The in-process DirectRunner re-raises the worker's exception (with " [while running ...]"
    appended); the multi-process DirectRunner and remote runners wrap it in a RuntimeError whose
    text holds the worker's traceback, from which the last CorpusError / StatsError line is taken.
    """
    chain: BaseException | None = err
    while chain is not None:
        if isinstance(chain, INPUT_ERRORS) or isinstance(chain, PreprocessError):
            return re.sub(r" \[while running .*\]$", "", str(chain), flags=re.DOTALL)
        chain = chain.__cause__ or chain.__context__
    found = _REMOTE_INPUT_ERROR.findall(str(err))
    return found[-1] if found else None


def run(build: Callable[[beam.Pipeline], None], options: PipelineOptions) -> None:
    """Builds and runs a pipeline to completion; bad input inside a worker -> PreprocessError."""
    try:
        with beam.Pipeline(options=options) as pipeline:
            build(pipeline)
    except PreprocessError:
        raise
    except Exception as err:  # noqa: BLE001  (a runner wraps worker errors in its own types)
        message = input_error_message(err)
        if message is None:
            raise
        raise PreprocessError(message) from err
