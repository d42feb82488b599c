#!/usr/bin/env python
"""Thin wrapper of `atlas-export` (atlas_t5x/cli/export.py); run `atlas-export --help` for its flags."""

import sys

from atlas_t5x.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
