#!/usr/bin/env python
"""Thin wrapper of `atlas-fit` (atlas_t5x/cli/fit.py); run `atlas-fit --help` for its flags."""

import sys

from atlas_t5x.cli.fit import main

if __name__ == "__main__":
    sys.exit(main())
