#!/usr/bin/env python
"""Per-language statistics on Apache Beam: thin wrapper around `atlas_t5x.cli.corpus_stats`
(the `atlas-corpus-stats` console script).

  python scripts/corpus_stats.py --out=/tmp/stats.json [Beam pipeline options]
"""

import sys

from atlas_t5x.cli.corpus_stats import main

if __name__ == "__main__":
    sys.exit(main())
