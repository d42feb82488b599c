#!/usr/bin/env python
"""Thin wrapper of `atlas-report` (atlas_t5x/cli/report.py); run `atlas-report --help` for its flags."""

import sys

from atlas_t5x.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
