"""atlas-train-vocab: train a SentencePiece vocabulary on a streamed, temperature-sampled MADLAD sample.

Training text is a temperature-sampled mix of the languages' TRAIN splits (validation and test
never reach the vocabulary): language l gets a share p_l ∝ n_l^(1/T) of `--sample_bytes`, n_l its
training bytes (from --stats, the statistics file of atlas-count-unique, else one streaming
pass). The paper trained its 64k vocabulary with T = 100, which is close to uniform.

Bounded memory: each language's train split is STREAMED and every document kept with probability
target / n_l (a seeded hash of the text, so the sample is deterministic), straight into a sample
file on disk; a language smaller than its target is passed over again (pass k keeps with
probability min(1, target / n_l - k)). SentencePiece then reads at most --max_sentences lines of
the sample (0 = all), so memory is set by the sample, never by the corpus.

The paper's vocabulary (64k pieces over all MADLAD-400 languages), e.g.:

  atlas-count-unique --root=gs://bucket/madlad --vocab=byte --stats=madlad_stats.json
  atlas-train-vocab --root=gs://bucket/madlad --stats=madlad_stats.json \
      --vocab_size=64000 --sample_bytes=20000000000 --max_sentences=50000000 \
      --out=vocabs/madlad_spm_64k.model

The embedded corpus's shipped model (the defaults) uses the same code.

Choices [our choice]: unigram model, 8,192 pieces (enough for 18 languages incl. CJK at this corpus
size), byte_fallback so every text round-trips, identity normalisation and no whitespace
collapsing (exact decoding), digits split, ids pad=0 eos=1 unk=2 and no BOS (seqio's convention).
Messages are fed one per line (SentencePiece treats lines as sentences); newlines in documents are
encoded through byte fallback.

Run:  atlas-train-vocab [--root DIR] [--vocab_size 8192] [--temperature 100]
(`python scripts/train_vocab.py ...` is the same command.)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile

from atlas_t5x import mixture_weights
from atlas_t5x.cli import common

COMMAND = "atlas-train-vocab"
# atlas_t5x.data.vocab.CORPUS_SPM_PATH, without importing it (it loads TensorFlow and seqio)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "vocabs",
                           "corpus_spm.model")


# p_l ∝ n_l^(1/T), normalised to sum to 1: the train pipeline's temperature mixture, without gin.
temperature_shares = mixture_weights.temperature_rates


CARD_TOKENS_MAX_BYTES = 10**9  # the card lists tokens per split only for corpora up to 1 GB


def keep_probability(target_bytes: int, size_bytes: int, epoch: int) -> float:
    """Probability of keeping a document on pass `epoch` so a language of `size_bytes` yields about
    `target_bytes` over its passes: min(1, target / size - epoch), clipped at 0."""
    return float(min(1.0, max(0.0, target_bytes / max(size_bytes, 1) - epoch)))


def keep(text: str, seed: int, epoch: int, probability: float) -> bool:
    """Deterministic Bernoulli(probability) draw from a seeded hash of the document and pass."""
    digest = hashlib.sha256(f"{seed}:{epoch}:".encode() + text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < probability


def sample_language(documents, target_bytes: int, size_bytes: int, seed: int):
    """Streams a temperature sample of one language: yields kept documents until they hold
    target_bytes of UTF-8 (or the passes run out). `documents` is a zero-argument callable
    returning a fresh iterator over the language's train split (one per pass)."""
    total, epoch = 0, 0
    while total < target_bytes and keep_probability(target_bytes, size_bytes, epoch) > 0:
        probability = keep_probability(target_bytes, size_bytes, epoch)
        for text in documents():
            if keep(text, seed, epoch, probability):
                yield text
                total += len(text.encode("utf-8"))
                if total >= target_bytes:
                    return
        epoch += 1


def language_seed(seed: int, lang: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{lang}".encode()).digest()[:8], "little")


def _main(argv: list[str] | None) -> int:
    parser = common.ArgumentParser(prog=COMMAND, description=__doc__, allow_abbrev=False)
    parser.add_argument("--root", default=None, help="MADLAD root (default: $MADLAD_DIR or the embedded corpus)")
    parser.add_argument("--languages", default="", help="comma-separated codes (default: all under root)")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--temperature", type=float, default=100.0)
    parser.add_argument("--sample_bytes", type=int, default=0,
                        help="bytes of training text for SentencePiece (default: total train bytes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--character_coverage", type=float, default=0.9995)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output .model path (default: the shipped corpus_spm)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stats", default="",
                        help="statistics file (scripts/count_unique.py) giving train bytes per language")
    parser.add_argument("--sample_dir", default="",
                        help="train on a sample drawn elsewhere (DIR/sample-*.txt, one line per sentence, "
                             "e.g. by the Beam pipeline) instead of sampling here")
    parser.add_argument("--max_sentences", type=int, default=0,
                        help="lines of the sample SentencePiece loads (0 = all; bounds its memory)")
    args = parser.parse_args(argv)
    if args.vocab_size < 300 or args.temperature <= 0 or not args.out.endswith(".model"):
        raise common.UsageError("need --vocab_size >= 300, --temperature > 0 and an --out ending in .model")
    common.require_training_stack(COMMAND)
    from atlas_t5x import train_progress  # noqa: PLC0415

    train_progress.quiet_library_logs()  # before TensorFlow loads: no C++ INFO chatter
    import sentencepiece as spm  # noqa: PLC0415

    from atlas_t5x.data import madlad  # noqa: PLC0415  (TensorFlow, seqio)

    if not sys.stderr.isatty():
        common.status(f"{COMMAND}: sampling {args.languages or 'every language'} under "
                      f"{args.root or 'the default root'}")
    try:
        root = madlad.resolve_madlad_dir(args.root)
        langs = [l for l in args.languages.split(",") if l] or madlad.available_languages(root)
        langs = [madlad.check_language_code(lang) for lang in langs]
        if args.stats:
            from atlas_t5x.data import stats as stats_lib  # noqa: PLC0415

            table = stats_lib.load_stats(args.stats, root, languages=langs)
            sizes = {l: int(table["languages"][l]["splits"]["train"]["bytes"]) for l in langs}
        else:
            sizes = {l: sum(len(d.encode("utf-8")) for d in madlad.iter_split(root, l, "train")) for l in langs}
    except ValueError as err:   # unknown codes, missing folders, bad corpus files, stale statistics
        raise common.UsageError(str(err)) from err
    train = dict.fromkeys(langs)
    sample_bytes = args.sample_bytes or sum(sizes.values())
    shares = temperature_shares(sizes, args.temperature)
    print(f"{'lang':5} {'train KB':>9} {'share':>7} {'sampled KB':>10} {'epochs':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "sample.txt")
        with open(text_path, "w", encoding="utf-8") as f:
            for lang in sorted(train) if not args.sample_dir else ():
                target = int(round(shares[lang] * sample_bytes))
                got = 0
                for doc in sample_language(lambda lang=lang: madlad.iter_split(root, lang, "train"),
                                           target, sizes[lang], language_seed(args.seed, lang)):
                    got += len(doc.encode("utf-8"))
                    for line in doc.split("\n"):
                        if line.strip():
                            f.write(line + "\n")
                print(f"{lang:5} {sizes[lang] / 1e3:9.1f} {shares[lang]:7.4f} {got / 1e3:10.1f} "
                      f"{got / sizes[lang]:7.2f}")
        # Relative names inside the temporary folder keep machine paths out of the model's
        # stored trainer spec, so the same inputs give a byte-identical .model file.
        if args.sample_dir:  # a sample drawn elsewhere (the Beam pipeline), same line format
            for i, part in enumerate(sorted(glob.glob(os.path.join(args.sample_dir, "sample-*.txt")))):
                shutil.copy(part, os.path.join(tmp, f"sample-{i:05d}.txt"))
            inputs = ",".join(sorted(n for n in os.listdir(tmp) if n.startswith("sample-")))
            if not inputs:
                raise common.UsageError(f"--sample_dir {args.sample_dir} holds no sample-*.txt files")
        else:
            inputs = "sample.txt"
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            spm.SentencePieceTrainer.train(
                input=inputs, model_prefix="spm", vocab_size=args.vocab_size,
                model_type="unigram", character_coverage=args.character_coverage,
                byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, split_digits=True, pad_id=0, eos_id=1, unk_id=2,
                bos_id=-1, input_sentence_size=args.max_sentences, shuffle_input_sentence=True,
                max_sentence_length=65536,
                num_threads=args.threads, minloglevel=2)
        except RuntimeError as error:  # e.g. a vocabulary larger than the sample supports
            raise common.UsageError(f"SentencePiece cannot train --vocab_size={args.vocab_size} on this "
                                    f"sample ({sample_bytes:,} bytes): {str(error).strip()}") from error
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
    # Token counts for the card: only for corpora small enough to encode here (the embedded one).
    tokens = {lang: {split: sum(len(processor.encode(d)) for d in madlad.iter_split(root, lang, split))
                     for split in madlad.SPLITS} for lang in sorted(train)} \
        if sum(sizes.values()) <= CARD_TOKENS_MAX_BYTES else {}
    card = {"model": os.path.basename(args.out), "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "vocab_size": args.vocab_size, "model_type": "unigram", "byte_fallback": True,
            "normalization": "identity", "special_ids": {"pad": 0, "eos": 1, "unk": 2},
            "temperature": args.temperature, "seed": args.seed, "sample_bytes": sample_bytes,
            "character_coverage": args.character_coverage, "splits_used": ["train"],
            "train_bytes": sizes, "tokens_without_eos": tokens, "max_sentences": args.max_sentences,
            "split_rule": __import__("atlas_t5x.data.stats", fromlist=["split_rule"]).split_rule(), "shares": {l: round(p, 6) for l, p in shares.items()},
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


def main(argv: list[str] | None = None) -> int:
    """atlas-train-vocab; `argv` without the program name (default sys.argv[1:]). Returns the exit code."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
