"""Shared command-line conventions: `--snake_case` flags, deprecated spellings, exit codes, progress.

Every `atlas-*` command builds its parser with `ArgumentParser` from here, so that
- an old spelling registered with `add_argument(..., deprecated=("--old-name",))` keeps working for
  one release and prints which flag replaces it;
- an unknown flag fails with exit code 2 and names the closest known flags;
- `run_main` maps `UsageError` to exit code 2 and Ctrl-C to 130 with a one-line message.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib.util
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class UsageError(Exception):
    """Bad input from the user (a flag, a file, a value): reported on one line, exit code 2."""


def warn_deprecated(old: str, new: str) -> None:
    print(f"warning: {old} is deprecated and will be removed in the next release; use {new}",
          file=sys.stderr)


def _deprecated_action(action: argparse.Action, old_names: Sequence[str]) -> argparse.Action:
    """A hidden copy of `action` answering to `old_names` that warns, then does what `action` does."""
    base = type(action)
    new_name = action.option_strings[0]

    class DeprecatedSpelling(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser, namespace, values, option_string=None):
            warn_deprecated(option_string or old_names[0], new_name)
            super().__call__(parser, namespace, values, option_string)

    alias = copy.copy(action)
    alias.__class__ = DeprecatedSpelling
    alias.option_strings = list(old_names)
    alias.help = argparse.SUPPRESS
    alias.required = False
    return alias


class ArgumentParser(argparse.ArgumentParser):
    """argparse with deprecated flag spellings and close-match suggestions for unknown flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `--worker=2` must not silently mean `--workers`
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, deprecated: Sequence[str] = (), **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*names, **kwargs)
        if deprecated:
            if not action.option_strings:
                raise ValueError(f"deprecated spellings {list(deprecated)} need an optional flag")
            self._add_action(_deprecated_action(action, list(deprecated)))
        return action

    def known_flags(self) -> list[str]:
        return sorted({s for a in self._actions for s in a.option_strings
                       if s.startswith("--") and a.help is not argparse.SUPPRESS})

    def error(self, message: str):  # argparse's hook: print usage + message, exit 2
        if message.startswith("unrecognized arguments:"):
            hints = []
            for token in message.split(":", 1)[1].split():
                flag = token.split("=", 1)[0]
                if not flag.startswith("-"):
                    continue
                close = difflib.get_close_matches(flag.replace("-", "_").replace("__", "--", 1),
                                                  self.known_flags(), n=2, cutoff=0.6)
                if close:
                    hints.append(f"{flag}: did you mean {' or '.join(close)}?")
            if hints:
                message = message + "\n  " + "\n  ".join(hints)
        super().error(message)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a command's `main`; UsageError → one line and 2, KeyboardInterrupt → 130."""
    prog = (sys.argv[0].rsplit("/", 1)[-1] or "atlas") if argv is None else "atlas"
    try:
        return int(main(argv) or 0)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _findable(name: str) -> bool:
    """Whether `name` can be imported, found without importing it (nor its parent package)."""
    parent, _, child = name.partition(".")
    spec = importlib.util.find_spec(parent)
    if spec is None or not child:
        return spec is not None
    return any(os.path.exists(os.path.join(location, child)) or
               os.path.exists(os.path.join(location, child + ".py"))
               for location in spec.submodule_search_locations or ())


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The top-level names of the modules in `modules` that cannot be imported here."""
    return [name.split(".")[0] for name in modules if not _findable(name)]


# Submodules, not bare names: from the repo root the `gin/` config folder imports as a namespace
# package called `gin`, and `orbax` is a namespace package whatever is installed.
TRAINING_STACK = ("jax", "flax", "optax", "orbax.checkpoint", "tensorflow", "seqio", "gin.config")


def require_training_stack(command: str) -> None:
    """Refuse, in one line, to run a training-side command on a fitter-only install."""
    missing = missing_modules(TRAINING_STACK)
    if missing:
        raise UsageError(f"{command} needs the training stack ({', '.join(missing)} not installed): "
                         "pip install 'atlas_t5x[train]'")


def status(message: str) -> None:
    """A progress line on stderr, flushed at once (the 'first line within a second')."""
    print(message, file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on stderr in a terminal; outside one, a line at start and about every 30 s."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm
        yield from tqdm(iterable, desc=description, total=total, file=sys.stderr, leave=False)
        return
    count = 0
    started = last = time.monotonic()
    status(f"{description}: started" + (f" ({total})" if total else ""))
    for item in iterable:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= 30:
            last = now
            status(f"{description}: {count}" + (f"/{total}" if total else "") + f" after {now - started:.0f} s")
    status(f"{description}: done, {count} in {time.monotonic() - started:.1f} s")
