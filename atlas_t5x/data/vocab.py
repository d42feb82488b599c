"""seqio vocabularies: the SentencePiece model shipped for the embedded corpus, and byte level.

Names accepted by `get_vocabulary`:
  * "corpus_spm": vocabs/corpus_spm.model, trained by scripts/train_vocab.py on a temperature-
    sampled (T = 100) mix of the embedded corpus's training splits; ids pad=0, eos=1, unk=2, with
    byte fallback so every text round-trips exactly (vocabs/corpus_spm.json records how it was made);
  * "byte": seqio.ByteVocabulary (UTF-8 bytes + 3 specials);
  * a path to any SentencePiece .model file (local or gs://).

The paper's vocabulary has PAPER_VOCAB_SIZE = 64,512 rows (64k SentencePiece + 512 special ids);
`model_vocab_size` gives the embedding-table size for a vocabulary, padded to a multiple of 128.
"""

from __future__ import annotations

import functools
import os

import gin
import seqio
import tensorflow as tf

VOCAB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabs")
CORPUS_SPM_PATH = os.path.join(VOCAB_DIR, "corpus_spm.model")
PAPER_VOCAB_SIZE = 64512   # rows of the paper's embedding table (64k SentencePiece + 512 special)
gin.constant("PAPER_VOCAB_SIZE", PAPER_VOCAB_SIZE)
EMBEDDING_MULTIPLE = 128

VOCABULARY_NAMES = ("corpus_spm", "byte")


@functools.lru_cache(maxsize=16)
def _load(name: str) -> seqio.Vocabulary:
    if name == "byte":
        return seqio.ByteVocabulary()
    path = CORPUS_SPM_PATH if name == "corpus_spm" else name
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"vocabulary {name!r}: SentencePiece model {path} does not exist"
                                + (" (run scripts/train_vocab.py)" if name == "corpus_spm" else ""))
    return seqio.SentencePieceVocabulary(path)


@gin.configurable
def get_vocabulary(name: str = "corpus_spm") -> seqio.Vocabulary:
    """"corpus_spm" (shipped SentencePiece), "byte", or a path to a SentencePiece .model file."""
    if name not in VOCABULARY_NAMES and not name.endswith(".model"):
        raise ValueError(f"unknown vocabulary {name!r}; expected one of {', '.join(VOCABULARY_NAMES)} "
                         "or a path to a SentencePiece .model file")
    return _load(name)


def padded_vocab_size(size: int, multiple: int = EMBEDDING_MULTIPLE) -> int:
    """Smallest multiple of `multiple` that is >= size (rows of the model's embedding table)."""
    if size <= 0 or multiple <= 0:
        raise ValueError(f"vocabulary size and multiple must be positive, got {size} and {multiple}")
    return -(-size // multiple) * multiple


@gin.configurable
def model_vocab_size(name: str = "corpus_spm", multiple: int = EMBEDDING_MULTIPLE) -> int:
    """Embedding rows for a named vocabulary: its size padded to a multiple of `multiple`.

    Gin: `ModelConfig.vocab_size = @model_vocab_size()` for the corpus vocabulary, or
    `ModelConfig.vocab_size = %PAPER_VOCAB_SIZE` for the paper's 64,512.
    """
    return padded_vocab_size(get_vocabulary(name).vocab_size, multiple)
