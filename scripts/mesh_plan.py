#!/usr/bin/env python
"""Sharding plan of a scale: thin wrapper around `atlas_t5x.cli.mesh_plan` (the `atlas-mesh-plan` console script).

  python scripts/mesh_plan.py --scale=scale46 --target=gpu_8x80gb
"""

import sys

from atlas_t5x.cli.mesh_plan import main

if __name__ == "__main__":
    sys.exit(main())
