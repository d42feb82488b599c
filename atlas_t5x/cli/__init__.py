"""Command-line entry points: each module has `main(argv=None) -> int` (scripts/*.py and console scripts call it)."""
