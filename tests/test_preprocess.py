"""Beam preprocessing on the DirectRunner: statistics (atlas_t5x.preprocess.statistics,
scripts/corpus_stats.py) and the vocabulary sample (atlas_t5x.preprocess.vocab_sample).

The statistics pipeline must write exactly the file of the single-process path
(`stats.compute_stats`) on the embedded corpus and on a synthetic root, refuse bad input with exit
2 and nothing written, and reuse an unchanged result. The sample must follow its temperature rule
exactly, deterministically by seed, and train a SentencePiece model.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam")

from atlas_t5x.data import madlad  # noqa: E402
from atlas_t5x.data import stats as stats_lib  # noqa: E402
from atlas_t5x.preprocess import beam_runtime, statistics, vocab_sample  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402
from tests.test_preprocess_tfds import synthetic_root, write_shard  # noqa: E402

SCRIPT = str(REPO_ROOT / "scripts" / "corpus_stats.py")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def _load_script():
    spec = importlib.util.spec_from_file_location("corpus_stats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus_stats = _load_script()


@pytest.fixture
def run_cli(capsys):
    """scripts/corpus_stats.py main() in this process: (exit code, stdout, stderr)."""
    def run(*args):
        code = corpus_stats.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)
    return run


def test_beam_statistics_equal_single_process_on_embedded_corpus(tmp_path):
    root = madlad.EMBEDDED_CORPUS_DIR
    languages = madlad.available_languages(root)   # all 18, 8 scripts
    beam_out, single_out = str(tmp_path / "beam.json"), str(tmp_path / "single.json")
    plan = statistics.run_statistics(root, None, "corpus_spm", beam_out)
    stats_lib.compute_stats(root, languages, "corpus_spm", path=single_out, progress=False)
    assert sorted(plan.todo) == sorted(languages) and plan.reused == []
    assert read(beam_out) == read(single_out)
    doc = stats_lib.read_stats(beam_out)
    for lang in languages:
        entry = doc["languages"][lang]
        assert entry["documents"] == sum(len(madlad.read_shard(p)) for p in madlad.shard_paths(root, lang))
        assert entry["unique_tokens"] == entry["splits"]["train"]["tokens"] > 0
        assert sum(s["documents"] for s in entry["splits"].values()) == entry["documents"]


def test_beam_statistics_equal_single_process_on_synthetic_root_two_workers(tmp_path):
    root = synthetic_root(tmp_path / "madlad")
    beam_out, single_out = str(tmp_path / "beam.json"), str(tmp_path / "single.json")
    statistics.run_statistics(root, None, "byte", beam_out,
                              ["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    stats_lib.compute_stats(root, madlad.available_languages(root), "byte", path=single_out,
                            progress=False)
    assert read(beam_out) == read(single_out)
    doc = stats_lib.read_stats(beam_out)
    assert sorted(doc["languages"]) == ["de", "en", "hi", "ru", "yo"]
    en = doc["languages"]["en"]
    assert en["documents"] == 270 and len(en["files"]) == 3
    # byte vocabulary: tokens = UTF-8 bytes + 1 EOS per document, in every split.
    for split in en["splits"].values():
        assert split["tokens"] == split["bytes"] + split["documents"]


def test_cli_writes_statistics_and_reuses_them_on_rerun(tmp_path, run_cli):
    root = synthetic_root(tmp_path / "madlad", {"en": (2, 30), "de": (1, 20)})
    out = str(tmp_path / "stats.json")
    first = run_cli(f"--root={root}", "--vocab=byte", f"--out={out}")
    assert first.returncode == 0, first.stderr
    assert "counted 2 language(s)" in first.stdout
    written = read(out)
    mtime = os.stat(out).st_mtime_ns
    again = run_cli(f"--root={root}", "--vocab=byte", f"--out={out}")
    assert again.returncode == 0, again.stderr
    assert "unchanged: reused" in again.stdout and os.stat(out).st_mtime_ns == mtime
    # a changed language is recounted, the unchanged one reused
    write_shard(os.path.join(root, "de", "de_clean_0001.jsonl.gz"), ["neu hinzu gekommen"] * 5)
    plan = statistics.run_statistics(root, None, "byte", out)
    assert list(plan.todo) == ["de"] and plan.reused == ["en"]
    doc = stats_lib.read_stats(out)
    assert doc["languages"]["de"]["documents"] == 25
    assert json.loads(written)["languages"]["en"] == doc["languages"]["en"]


def test_cli_bad_input_exit_2_and_nothing_written(tmp_path, run_cli):
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    out = tmp_path / "stats.json"
    result = run_cli(f"--root={empty_root}", f"--out={out}")
    assert result.returncode == 2 and "holds no language folders" in result.stderr
    assert not out.exists()

    root = synthetic_root(tmp_path / "madlad", {"en": (1, 20), "de": (1, 20)})
    result = run_cli(f"--root={root}", "--vocab=/nowhere/spm.model", f"--out={out}")
    assert result.returncode == 2 and "/nowhere/spm.model" in result.stderr
    result = run_cli(f"--root={root}", "--vocab=wordpiece", f"--out={out}")
    assert result.returncode == 2 and "unknown vocabulary 'wordpiece'" in result.stderr
    result = run_cli(f"--root={root}", "--languages=en,xx-not", f"--out={out}")
    assert result.returncode == 2 and "xx-not" in result.stderr
    assert not out.exists()

    # an output file holding statistics for another vocabulary, then another root: refused, kept
    assert run_cli(f"--root={root}", "--vocab=byte", f"--out={out}").returncode == 0
    before = read(out)
    result = run_cli(f"--root={root}", "--vocab=corpus_spm", f"--out={out}")
    assert result.returncode == 2 and "vocabulary" in result.stderr and str(out) in result.stderr
    other = synthetic_root(tmp_path / "other", {"en": (1, 20)})
    result = run_cli(f"--root={other}", "--vocab=byte", f"--out={out}")
    assert result.returncode == 2 and f"describes root {root}" in result.stderr
    assert read(out) == before


def test_corrupt_shard_names_file_and_writes_nothing(tmp_path):
    root = synthetic_root(tmp_path / "madlad", {"en": (1, 20), "de": (1, 20)})
    bad = os.path.join(root, "de", "de_clean_0001.jsonl.gz")
    write_shard(bad, ["gut"] * 3, raw_lines=['{"text": "kaputt'])
    out = str(tmp_path / "stats.json")
    with pytest.raises(beam_runtime.PreprocessError, match=rf"{bad}:4: not a valid JSON line"):
        statistics.run_statistics(root, None, "byte", out)
    assert not os.path.exists(out)
    # with skip_bad_records the line is counted per language, like the single-process path
    statistics.run_statistics(root, None, "byte", out, skip_bad_records=True)
    single = str(tmp_path / "single.json")
    stats_lib.compute_stats(root, ["de", "en"], "byte", path=single, progress=False,
                            skip_bad_records=True)
    assert read(out) == read(single)
    assert stats_lib.read_stats(out)["languages"]["de"]["bad_records"] == 1

    os.remove(bad)
    write_shard(os.path.join(root, "yo", "yo_clean_0000.jsonl.gz"), [])   # a language without documents
    before = read(out)
    with pytest.raises(beam_runtime.PreprocessError, match=f"language 'yo': shards under {root}/yo hold no"):
        statistics.run_statistics(root, None, "byte", out)
    assert read(out) == before   # the existing file is left as it was
    os.remove(os.path.join(root, "yo", "yo_clean_0000.jsonl.gz"))
    os.rmdir(os.path.join(root, "yo"))
    not_gzip = os.path.join(root, "en", "en_clean_0001.jsonl.gz")
    with open(not_gzip, "wb") as f:
        f.write(b"this is not gzip at all")
    os.remove(out)
    with pytest.raises(beam_runtime.PreprocessError, match=rf"{not_gzip}: not valid gzip"):
        statistics.run_statistics(root, None, "byte", out)
    assert not os.path.exists(out)


def test_worker_failure_text_from_a_remote_runner_is_recognised():
    remote = RuntimeError('Traceback (most recent call last):\n  File "x.py", line 3, in f\n'
                          "atlas_t5x.data.madlad.CorpusError: /r/de/de_clean_0000.jsonl.gz:7: not a "
                          "valid JSON line: Expecting value [while running 'Pass1Sizes']\n")
    assert beam_runtime.input_error_message(remote) == "/r/de/de_clean_0000.jsonl.gz:7: not a valid JSON line: Expecting value"
    assert beam_runtime.input_error_message(RuntimeError("worker lost")) is None


@pytest.mark.slow   # interpreter and worker-process starts; the in-process CLI tests are the fast sample
def test_cli_as_a_process_with_beam_flags(tmp_path):
    """The script itself, with Beam's own flags passed through: two DirectRunner worker processes."""
    root = synthetic_root(tmp_path / "madlad", {"en": (1, 30), "yo": (1, 9)})
    out = tmp_path / "stats.json"
    result = subprocess.run(
        [sys.executable, SCRIPT, f"--root={root}", "--vocab=byte", f"--out={out}",
         "--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert result.returncode == 0, result.stderr
    single = str(tmp_path / "single.json")
    stats_lib.compute_stats(root, ["en", "yo"], "byte", path=single, progress=False)
    assert read(str(out)) == read(single)


# ----------------------------------------------------------------------------- vocabulary sample


@pytest.fixture(scope="module")
def embedded_stats(tmp_path_factory):
    """Statistics of the embedded corpus (byte vocabulary: the sample needs only bytes)."""
    path = str(tmp_path_factory.mktemp("stats") / "stats.json")
    statistics.run_statistics(madlad.EMBEDDED_CORPUS_DIR, None, "byte", path)
    return path


def reference_sample(plan):
    """The sample rule of atlas_t5x.preprocess.vocab_sample, applied in one process: sentences
    per language, and the mean and standard deviation of each language's sampled bytes."""
    expected, moments = {}, {}
    for lang, paths in plan.shards.items():
        rate = plan.rates[lang]
        frac = rate - int(rate)
        mean = var = 0.0
        for path in paths:
            name = path.rsplit("/", 1)[-1]
            for line, text in madlad.iter_shard(path):
                if stats_lib.split_of(text, plan.thresholds[lang]) == "train":
                    n = vocab_sample.copies(rate, vocab_sample.uniform(plan.seed, lang, name, line))
                    sents = vocab_sample.sentences(text)
                    expected.setdefault(lang, []).extend(sents * n)
                    size = sum(len(s.encode()) for s in sents)
                    mean, var = mean + rate * size, var + frac * (1 - frac) * size**2
        moments[lang] = (mean, var**0.5)
    return expected, moments


def test_vocab_sample_is_the_temperature_rule_deterministic_by_seed(tmp_path, embedded_stats):
    root = madlad.EMBEDDED_CORPUS_DIR
    plan = vocab_sample.plan_sample(root, embedded_stats, str(tmp_path / "a"), 600_000,
                                    temperature=100, seed=3, num_shards=2)
    assert vocab_sample.run_sample(plan)
    files = vocab_sample.sample_files(plan.out)
    assert [os.path.basename(f) for f in files] == ["sample-00000-of-00002.txt", "sample-00001-of-00002.txt"]
    lines = [line for f in files for line in open(f, encoding="utf-8").read().split("\n")[:-1]]
    expected, moments = reference_sample(plan)
    assert sorted(lines) == sorted(s for sents in expected.values() for s in sents)
    # shares: p_l ∝ n_l^(1/T) of the sample; with T = 100 the smallest language gets almost the
    # largest's share, so its documents are drawn at a much higher rate.
    manifest = vocab_sample.read_manifest(plan.out)["languages"]
    n = {lang: row["train_bytes"] for lang, row in manifest.items()}
    p = {lang: n[lang] ** (1 / 100) for lang in n}
    for lang, row in manifest.items():
        assert row["share"] == pytest.approx(p[lang] / sum(p.values()), rel=1e-9)
        assert row["sampled_bytes"] == sum(len(s.encode()) for s in expected[lang])
        # expected bytes = share x sample_bytes (less the newlines between sentences), and the
        # draw lands within 4 standard deviations of it
        mean, sigma = moments[lang]
        assert mean == pytest.approx(row["share"] * 600_000, rel=0.05)
        assert abs(row["sampled_bytes"] - mean) <= 4 * sigma
    total = sum(row["sampled_bytes"] for row in manifest.values())
    assert total == pytest.approx(600_000, rel=0.15)
    assert manifest["yi"]["rate"] > 5 * manifest["ru"]["rate"]   # the small language is oversampled

    # same seed with two workers: byte-identical files; rerun reuses; another seed differs
    same = vocab_sample.plan_sample(root, embedded_stats, str(tmp_path / "b"), 600_000, seed=3, num_shards=2)
    vocab_sample.run_sample(same, ["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    assert [read(f) for f in vocab_sample.sample_files(same.out)] == [read(f) for f in files]
    assert not vocab_sample.run_sample(plan)
    other = vocab_sample.plan_sample(root, embedded_stats, str(tmp_path / "a"), 600_000, seed=4, num_shards=2)
    with pytest.raises(beam_runtime.PreprocessError, match="other parameters"):
        vocab_sample.run_sample(other)
    other = dataclasses.replace(other, out=str(tmp_path / "c"))
    vocab_sample.run_sample(other)
    assert [read(f) for f in vocab_sample.sample_files(other.out)] != [read(f) for f in files]


def test_sentencepiece_trains_on_the_sample(tmp_path, embedded_stats):
    spm = pytest.importorskip("sentencepiece")
    plan = vocab_sample.plan_sample(madlad.EMBEDDED_CORPUS_DIR, embedded_stats, str(tmp_path / "s"),
                                    150_000, languages=["en", "ru", "ja"])
    vocab_sample.run_sample(plan)
    prefix = str(tmp_path / "spm")
    spm.SentencePieceTrainer.train(input=",".join(vocab_sample.sample_files(plan.out)),
                                   model_prefix=prefix, vocab_size=1200, byte_fallback=True,
                                   minloglevel=2, num_threads=1)
    model = spm.SentencePieceProcessor(model_file=prefix + ".model")
    assert model.get_piece_size() == 1200
    assert model.decode(model.encode("Hello Привет 日本")) == "Hello Привет 日本"


def test_vocab_sample_bad_input(tmp_path, embedded_stats):
    with pytest.raises(stats_lib.StatsError, match="describes root"):
        vocab_sample.plan_sample(synthetic_root(tmp_path / "m", {"en": (1, 20)}), embedded_stats,
                                 str(tmp_path / "o"), 1000)
    with pytest.raises(stats_lib.StatsError, match="does not exist"):
        vocab_sample.plan_sample(madlad.EMBEDDED_CORPUS_DIR, str(tmp_path / "none.json"), str(tmp_path / "o"), 1000)
    code = vocab_sample.main([f"--stats={embedded_stats}", f"--out={tmp_path / 'o'}", "--sample_bytes=0"])
    assert code == 2 and not (tmp_path / "o").exists()


def test_train_vocab_trains_on_the_beam_sample(tmp_path):
    """statistics -> sample (Beam) -> scripts/train_vocab.py --sample_dir: the whole vocabulary path."""
    root = synthetic_root(tmp_path / "madlad")
    stats_path, sample_dir = str(tmp_path / "stats.json"), str(tmp_path / "sample")
    statistics.run_statistics(root, None, "byte", stats_path)
    plan = vocab_sample.plan_sample(root, stats_path, sample_dir, 40_000, seed=1)
    vocab_sample.run_sample(plan)
    spec = importlib.util.spec_from_file_location("train_vocab", str(REPO_ROOT / "scripts" / "train_vocab.py"))
    train_vocab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_vocab)
    model_path = str(tmp_path / "spm.model")
    assert train_vocab.main([f"--root={root}", f"--stats={stats_path}", f"--sample_dir={sample_dir}",
                             "--vocab_size=340", "--threads=1", f"--out={model_path}"]) == 0
    import sentencepiece as spm  # noqa: PLC0415

    model = spm.SentencePieceProcessor(model_file=model_path)
    text = next(madlad.iter_split(root, "hi", "train"))
    assert model.get_piece_size() == 340 and model.decode(model.encode(text)) == text
