#!/usr/bin/env python
"""`make demo`: thin wrapper around `atlas_t5x.cli.demo` (also the `atlas-demo` console script)."""

import sys

from atlas_t5x.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
