#!/usr/bin/env python
"""Build the embedded corpus: thin wrapper around `atlas_t5x.cli.build_corpus` (the `atlas-build-corpus` console script).

  python scripts/build_corpus.py [--out atlas_t5x/data/corpus] [--check]
"""

import sys

from atlas_t5x.cli.build_corpus import main

if __name__ == "__main__":
    sys.exit(main())
