"""Trains the SentencePiece vocabulary shipped for the embedded corpus.

Training text is a temperature-sampled mix of the languages' TRAIN splits (validation and test
never reach the vocabulary): language l gets a share p_l ∝ n_l^(1/T) of `--sample_bytes`, n_l its
training bytes. The paper trained its 64k vocabulary with T = 100, which is close to uniform, so
small languages are repeated (their documents cycled in a seeded order) to reach their share.

Choices [our choice]: unigram model, 8,192 pieces (enough for 18 languages incl. CJK at this corpus
size), byte_fallback so every text round-trips, identity normalisation and no whitespace
collapsing (exact decoding), digits split, ids pad=0 eos=1 unk=2 and no BOS (seqio's convention).
Messages are fed one per line (SentencePiece treats lines as sentences); newlines in documents are
encoded through byte fallback.

Run:  python scripts/train_vocab.py [--root DIR] [--vocab_size 8192] [--temperature 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import sentencepiece as spm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from atlas_t5x.data import madlad  # noqa: E402  pylint: disable=wrong-import-position
from atlas_t5x.data import mixtures  # noqa: E402  pylint: disable=wrong-import-position
from atlas_t5x.data import vocab as vocab_lib  # noqa: E402  pylint: disable=wrong-import-position


def temperature_shares(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    """p_l ∝ n_l^(1/T), normalised to sum to 1 (the temperature mixture of the train pipeline)."""
    return dict(mixtures.temperature(sizes, temperature).weights)


def sample_language(docs: list[str], target_bytes: int, seed: int) -> list[str]:
    """Documents cycled in a seeded random order until they hold target_bytes of UTF-8."""
    rng = np.random.default_rng(seed)
    picked, total = [], 0
    while total < target_bytes:
        for i in rng.permutation(len(docs)):
            picked.append(docs[i])
            total += len(docs[i].encode("utf-8"))
            if total >= target_bytes:
                break
    return picked


def language_seed(seed: int, lang: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{lang}".encode()).digest()[:8], "little")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="MADLAD root (default: $MADLAD_DIR or the embedded corpus)")
    parser.add_argument("--languages", default="", help="comma-separated codes (default: all under root)")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--temperature", type=float, default=100.0)
    parser.add_argument("--sample_bytes", type=int, default=0,
                        help="bytes of training text for SentencePiece (default: total train bytes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--character_coverage", type=float, default=0.9995)
    parser.add_argument("--out", default=vocab_lib.CORPUS_SPM_PATH, help="output .model path")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.vocab_size < 300 or args.temperature <= 0 or not args.out.endswith(".model"):
        print("error: need --vocab_size >= 300, --temperature > 0 and an --out ending in .model",
              file=sys.stderr)
        return 2
    try:
        root = madlad.resolve_madlad_dir(args.root)
        langs = [l for l in args.languages.split(",") if l] or madlad.available_languages(root)
        train = {lang: madlad.load_split(root, lang, "train") for lang in langs}
    except ValueError as err:   # unknown codes, missing folders, bad corpus files
        print(f"error: {err}", file=sys.stderr)
        return 2

    sizes = {l: sum(len(d.encode("utf-8")) for d in docs) for l, docs in train.items()}
    sample_bytes = args.sample_bytes or sum(sizes.values())
    shares = temperature_shares(sizes, args.temperature)
    print(f"{'lang':5} {'train KB':>9} {'share':>7} {'sampled KB':>10} {'epochs':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "sample.txt")
        with open(text_path, "w", encoding="utf-8") as f:
            for lang in sorted(train):
                target = int(round(shares[lang] * sample_bytes))
                picked = sample_language(train[lang], target, language_seed(args.seed, lang))
                for doc in picked:
                    for line in doc.split("\n"):
                        if line.strip():
                            f.write(line + "\n")
                got = sum(len(d.encode("utf-8")) for d in picked)
                print(f"{lang:5} {sizes[lang] / 1e3:9.1f} {shares[lang]:7.4f} {got / 1e3:10.1f} "
                      f"{got / sizes[lang]:7.2f}")
        # Relative names inside the temporary folder keep machine paths out of the model's
        # stored trainer spec, so the same inputs give a byte-identical .model file.
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            spm.SentencePieceTrainer.train(
                input="sample.txt", model_prefix="spm", vocab_size=args.vocab_size,
                model_type="unigram", character_coverage=args.character_coverage,
                byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, split_digits=True, pad_id=0, eos_id=1, unk_id=2,
                bos_id=-1, input_sentence_size=0, max_sentence_length=65536,
                num_threads=args.threads, minloglevel=2)
        finally:
            os.chdir(cwd)
        with open(os.path.join(tmp, "spm.model"), "rb") as f:
            model_bytes = f.read()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp_out = args.out + ".tmp"
    with open(tmp_out, "wb") as f:
        f.write(model_bytes)
    os.replace(tmp_out, args.out)
    processor = spm.SentencePieceProcessor(model_proto=model_bytes)
    tokens = {lang: {split: sum(len(ids) for ids in processor.encode(madlad.load_split(root, lang, split)))
                     for split in madlad.SPLITS} for lang in sorted(train)}
    card = {"model": os.path.basename(args.out), "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "vocab_size": args.vocab_size, "model_type": "unigram", "byte_fallback": True,
            "normalization": "identity", "special_ids": {"pad": 0, "eos": 1, "unk": 2},
            "temperature": args.temperature, "seed": args.seed, "sample_bytes": sample_bytes,
            "character_coverage": args.character_coverage, "splits_used": ["train"],
            "train_bytes": sizes, "tokens_without_eos": tokens, "shares": {l: round(p, 6) for l, p in shares.items()},
            "root": "embedded" if root == madlad.EMBEDDED_CORPUS_DIR else root}
    card_path = args.out[: -len(".model")] + ".json"
    with open(card_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(card, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(card_path + ".tmp", card_path)
    print(f"{'lang':5} " + " ".join(f"{s + ' tokens':>18}" for s in madlad.SPLITS))
    for lang, counts in tokens.items():
        print(f"{lang:5} " + " ".join(f"{counts[s]:18d}" for s in madlad.SPLITS))
    print(f"wrote {args.out} ({len(model_bytes) / 1e3:.0f} KB, {args.vocab_size} pieces, "
          f"T={args.temperature}, {sample_bytes / 1e6:.2f} MB sampled) and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
