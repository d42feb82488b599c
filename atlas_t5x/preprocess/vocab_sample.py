r"""The temperature-sampled sentence sample a SentencePiece vocabulary is trained on, on Apache Beam.

  python -m atlas_t5x.preprocess.vocab_sample --root=gs://B/madlad --stats=gs://B/madlad_stats.json \
      --out=gs://B/spm_sample --sample_bytes=20000000000 [--temperature=100 --seed=0] [Beam flags]

Rule (deterministic by seed, one decision per document, no global pass over the text):
  * only TRAINING documents are sampled (`stats.split_of` with the thresholds of the statistics
    file: validation and test never reach the vocabulary);
  * language l gets a share p_l ∝ n_l^(1/T) of `sample_bytes` (`mixture_weights.temperature_rates` over n_l =
    its training-split UTF-8 bytes from the statistics file; T = 100 by default, the value
    scripts/train_vocab.py uses for the paper's vocabulary), i.e. a rate r_l = p_l·sample_bytes / n_l
    that may exceed 1 for small languages (their documents repeat);
  * a document at (shard file, line) is taken floor(r_l) times, plus once more when
    u < frac(r_l), u a uniform from SHA-256(seed, language, shard file, line): expected bytes per
    language are exactly p_l·sample_bytes, the draw does not depend on runner, sharding or order;
  * each taken document contributes its non-empty lines, one sentence per output line (the
    convention of scripts/train_vocab.py).

Output folder: `sample-SSSSS-of-NNNNN.txt` (UTF-8 text, lines in a fixed order: sorted by (shard
file, line, copy) within an output shard chosen by hash), then `sample.json` (written last: its
presence marks a complete sample) with the parameters, per-language shares and sampled bytes. The
same parameters over an unchanged statistics file reuse the folder; a folder holding a sample made
with other parameters is refused. The trainer's memory is bounded by `sample_bytes`, not the corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import zlib
from typing import Any, Sequence

import apache_beam as beam

from atlas_t5x import mixture_weights
from atlas_t5x.data import madlad
from atlas_t5x.data import stats as stats_lib
from atlas_t5x.preprocess import beam_runtime
from atlas_t5x.preprocess.beam_runtime import PreprocessError

MANIFEST = "sample.json"
SHARD_PATTERN = "sample-{index:05d}-of-{count:05d}.txt"
DEFAULT_TEMPERATURE = 100.0
SHARD_TARGET_BYTES = 256 * 2**20   # [our choice] default output shard size
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """The checked parameters of a sample: rates per language and where to write."""

    root: str
    out: str
    stats_path: str
    seed: int
    temperature: float
    sample_bytes: int
    num_shards: int
    shards: dict[str, list[str]]            # language -> shard paths
    thresholds: dict[str, stats_lib.SplitThresholds]
    train_bytes: dict[str, int]
    shares: dict[str, float]
    rates: dict[str, float]

    def parameters(self) -> dict[str, Any]:
        """What the sample depends on (the manifest's identity: equal -> reuse)."""
        return {"version": _VERSION, "root": stats_lib.normalize_root(self.root), "seed": self.seed,
                "temperature": self.temperature, "sample_bytes": self.sample_bytes,
                "num_shards": self.num_shards, "split_rule": stats_lib.split_rule(),
                "train_bytes": self.train_bytes,
                "files": {lang: stats_lib.listed_files(self.root, lang) for lang in sorted(self.shards)}}


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def plan_sample(root: str, stats_path: str, out: str, sample_bytes: int,
                temperature: float = DEFAULT_TEMPERATURE, seed: int = 0,
                languages: Sequence[str] | None = None, num_shards: int = 0) -> SamplePlan:
    """Checks the input (root, statistics file, parameters) and computes the per-language rates."""
    from atlas_t5x.preprocess import statistics  # noqa: PLC0415

    if sample_bytes <= 0:
        raise PreprocessError(f"--sample_bytes must be > 0, got {sample_bytes}")
    langs = statistics.resolve_languages(root, languages)
    stats = stats_lib.load_stats(stats_path, root, None, langs, check_files=True)
    train_bytes = {lang: int(stats["languages"][lang]["splits"]["train"]["bytes"]) for lang in langs}
    empty = sorted(lang for lang, n in train_bytes.items() if n <= 0)
    if empty:
        raise PreprocessError(f"statistics file {stats_path}: languages {empty} have no training text")
    shares = mixture_weights.temperature_rates(train_bytes, temperature)
    rates = {lang: shares[lang] * sample_bytes / train_bytes[lang] for lang in langs}
    thresholds = {lang: stats_lib.SplitThresholds.from_json(stats["languages"][lang]["thresholds"])
                  for lang in langs}
    num_shards = num_shards or max(1, math.ceil(sample_bytes / SHARD_TARGET_BYTES))
    return SamplePlan(root, out, stats_path, seed, float(temperature), int(sample_bytes), num_shards,
                      {lang: madlad.shard_paths(root, lang) for lang in langs}, thresholds,
                      train_bytes, shares, rates)


def uniform(seed: int, lang: str, shard_name: str, line: int) -> float:
    """u in [0, 1) for one document position (first 8 bytes of a SHA-256, big endian / 2**64)."""
    digest = hashlib.sha256(f"{seed}\x00{lang}\x00{shard_name}\x00{line}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def copies(rate: float, u: float) -> int:
    """Times a document is taken at sampling rate `rate`: floor(rate) + [u < frac(rate)]."""
    whole = math.floor(rate)
    return whole + (1 if u < rate - whole else 0)


def sentences(text: str) -> list[str]:
    """The document's non-empty lines (SentencePiece reads one sentence per line)."""
    return [line for line in text.split("\n") if line.strip()]


class _SampleShard(beam.DoFn):
    """(output shard, ((shard file, line, copy, sentence index), sentence)) for one input shard."""

    def __init__(self, plan: SamplePlan):
        self._seed = plan.seed
        self._rates = plan.rates
        self._thresholds = plan.thresholds
        self._num_shards = plan.num_shards

    def process(self, shard: tuple[str, str]):
        lang, path = shard
        name = path.rsplit("/", 1)[-1]
        rate, thresholds = self._rates[lang], self._thresholds[lang]
        for line, text in madlad.iter_shard(path, skip_bad_records=False):
            if stats_lib.split_of(text, thresholds) != "train":
                continue
            for copy in range(copies(rate, uniform(self._seed, lang, name, line))):
                key = (name, line, copy)
                target = zlib.crc32(repr(key).encode()) % self._num_shards
                for i, sentence in enumerate(sentences(text)):
                    yield target, ((name, line, copy, i), lang, sentence)


def _write_shard(group: tuple[int, Any], out: str, num_shards: int) -> tuple[str, int]:
    import tensorflow as tf  # noqa: PLC0415

    index, rows = group
    rows = sorted(rows)
    path = _join(out, SHARD_PATTERN.format(index=index, count=num_shards))
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        for _, _, sentence in rows:
            f.write(sentence + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path, len(rows)


def _sentence_bytes(row: tuple[int, tuple]) -> tuple[str, int]:
    _, (_, lang, sentence) = row
    return lang, len(sentence.encode("utf-8"))


def _write_manifest(sampled: list[tuple[str, int]], written: list, plan: SamplePlan) -> None:
    from atlas_t5x import logio  # noqa: PLC0415

    got = dict(sampled)
    manifest = {"parameters": plan.parameters(), "stats": plan.stats_path,
                "files": sorted(SHARD_PATTERN.format(index=i, count=plan.num_shards)
                                for i in range(plan.num_shards)),
                "languages": {lang: {"train_bytes": plan.train_bytes[lang],
                                     "share": plan.shares[lang], "rate": plan.rates[lang],
                                     "sampled_bytes": int(got.get(lang, 0))}
                              for lang in sorted(plan.shards)}}
    logio.write_atomic(_join(plan.out, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def build_sample(pipeline: beam.Pipeline, plan: SamplePlan) -> None:
    """Adds the sampling pipeline: sample, write the shards, then the manifest."""
    shards = [(lang, path) for lang, paths in sorted(plan.shards.items()) for path in paths]
    rows = (pipeline
            | "ListShards" >> beam.Create(shards) | "SpreadShards" >> beam.Reshuffle()
            | "Sample" >> beam.ParDo(_SampleShard(plan)))
    # Every output shard exists, even an empty one (a fixed file list).
    empty = pipeline | "AllShards" >> beam.Create([(i, None) for i in range(plan.num_shards)])
    written = ((rows, empty) | "WithEmpty" >> beam.Flatten()
               | "ByOutputShard" >> beam.GroupByKey()
               | "DropMarkers" >> beam.Map(lambda kv: (kv[0], [r for r in kv[1] if r is not None]))
               | "WriteShards" >> beam.Map(_write_shard, out=plan.out, num_shards=plan.num_shards))
    sampled = (rows | "Bytes" >> beam.Map(_sentence_bytes)
               | "SumBytes" >> beam.CombinePerKey(sum) | "AllBytes" >> beam.combiners.ToList())
    _ = (sampled
         | "Manifest" >> beam.Map(_write_manifest, written=beam.pvalue.AsList(written), plan=plan))


def read_manifest(out: str) -> dict[str, Any] | None:
    """The sample folder's manifest, None if there is none (no complete sample)."""
    import tensorflow as tf  # noqa: PLC0415

    path = _join(out, MANIFEST)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise PreprocessError(f"sample manifest {path} is not valid JSON: {err}") from err


def sample_files(out: str) -> list[str]:
    """The text files of a complete sample (what SentencePiece is given), in order."""
    manifest = read_manifest(out)
    if manifest is None:
        raise PreprocessError(f"{out} holds no complete vocabulary sample (no {MANIFEST})")
    return [_join(out, name) for name in manifest["files"]]


def run_sample(plan: SamplePlan, beam_args: Sequence[str] = ()) -> bool:
    """Writes the sample unless the folder already holds this one; True if it ran the pipeline.

    PreprocessError if the folder holds a sample made with other parameters (nothing is changed).
    """
    import tensorflow as tf  # noqa: PLC0415

    existing = read_manifest(plan.out)
    if existing is not None:
        if existing.get("parameters") == json.loads(json.dumps(plan.parameters())):
            return False
        raise PreprocessError(f"{plan.out} already holds a vocabulary sample made with other "
                              f"parameters ({_join(plan.out, MANIFEST)}); choose another --out")
    tf.io.gfile.makedirs(plan.out)
    for name in tf.io.gfile.listdir(plan.out):   # leftovers of an interrupted run (no manifest)
        if name.startswith("sample-"):
            tf.io.gfile.remove(_join(plan.out, name))
    beam_runtime.run(lambda p: build_sample(p, plan), beam_runtime.pipeline_options(beam_args))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="MADLAD root (default: $MADLAD_DIR or the embedded corpus)")
    parser.add_argument("--languages", default="", help="comma-separated codes (default: all under the root)")
    parser.add_argument("--stats", required=True, help="statistics file of the root (scripts/corpus_stats.py)")
    parser.add_argument("--out", required=True, help="output folder (local or gs://)")
    parser.add_argument("--sample_bytes", type=int, required=True, help="expected UTF-8 bytes of the sample")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_shards", type=int, default=0,
                        help=f"output text files (default: one per {SHARD_TARGET_BYTES >> 20} MiB)")
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    languages = [code.strip() for code in args.languages.split(",") if code.strip()] or None
    try:
        plan = plan_sample(madlad.resolve_madlad_dir(args.root), args.stats, args.out, args.sample_bytes,
                           args.temperature, args.seed, languages, args.num_shards)
        ran = run_sample(plan, beam_args)
    except (ValueError, FileNotFoundError) as err:  # CorpusError, StatsError, PreprocessError
        print(f"vocab_sample: error: {err}", file=sys.stderr)
        return 2
    manifest = read_manifest(plan.out)
    print(f"{'lang':8} {'train MB':>9} {'share':>8} {'sampled MB':>10}")
    for lang, row in manifest["languages"].items():
        print(f"{lang:8} {row['train_bytes'] / 1e6:9.3f} {row['share']:8.4f} {row['sampled_bytes'] / 1e6:10.3f}")
    print(("wrote" if ran else "unchanged, reused") + f" {len(manifest['files'])} file(s) in {plan.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
