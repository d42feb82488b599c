#!/usr/bin/env python
"""Thin wrapper of `atlas-transfer` (atlas_t5x/cli/transfer.py); run `atlas-transfer --help` for its flags."""

import sys

from atlas_t5x.cli.transfer import main

if __name__ == "__main__":
    sys.exit(main())
