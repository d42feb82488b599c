#!/usr/bin/env python
"""Thin wrapper of `atlas-plan` (atlas_t5x/cli/plan.py); run `atlas-plan --help` for its flags."""

import sys

from atlas_t5x.cli.plan import main

if __name__ == "__main__":
    sys.exit(main())
