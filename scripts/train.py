#!/usr/bin/env python
"""Train a decoder from gin files: thin wrapper around `atlas_t5x.cli.train` (the `atlas-train` console script).

  python scripts/train.py --gin_file=gin/runs/smoke.gin --model_dir=/tmp/smoke
"""

import sys

from atlas_t5x.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
