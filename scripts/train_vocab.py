#!/usr/bin/env python
"""Train a SentencePiece vocabulary: thin wrapper around `atlas_t5x.cli.train_vocab` (the `atlas-train-vocab` console script).

  python scripts/train_vocab.py [--root DIR] [--vocab_size 8192] [--temperature 100]
"""

import sys

from atlas_t5x.cli.train_vocab import main

if __name__ == "__main__":
    sys.exit(main())
