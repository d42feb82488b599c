#!/usr/bin/env python
"""Run or print a sweep: thin wrapper around `atlas_t5x.cli.sweep` (the `atlas-sweep` console script).

  python scripts/sweep.py gin/sweeps/demo.yaml --out out/sweep [--print]
"""

import sys

from atlas_t5x.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
