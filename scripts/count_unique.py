#!/usr/bin/env python
"""Per-language statistics file of a MADLAD root: thin wrapper around `atlas_t5x.cli.count_unique`
(the `atlas-count-unique` console script).

  python scripts/count_unique.py --root=/data/madlad --languages=en,fr --vocab=byte --stats=stats.json
"""

import sys

from atlas_t5x.cli.count_unique import main

if __name__ == "__main__":
    sys.exit(main())
