"""The packed train stream: shares, exact accounting, resume, multi-process slicing, packing, eval."""

import gzip
import json
import os
import shutil

import gin
import numpy as np
import pytest
import seqio

from atlas_t5x.data import accounting, madlad, stats
from atlas_t5x.data import mixtures as M
from atlas_t5x.data import pipeline as P

VOCAB = seqio.ByteVocabulary()
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_docs(lang: str, n_docs: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{lang}{i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 30))))
            for i in range(n_docs)]


def write_madlad(root, docs_by_lang, n_shards=1):
    for lang, docs in docs_by_lang.items():
        os.makedirs(root / lang, exist_ok=True)
        for old in os.listdir(root / lang):
            os.remove(root / lang / old)
        for shard in range(n_shards):
            with gzip.open(root / lang / f"{lang}_clean_{shard:04d}.jsonl.gz", "wt", encoding="utf-8") as f:
                for text in docs[shard::n_shards]:
                    f.write(json.dumps({"text": text}) + "\n")


def make_pipeline(tmp_path, weights, n_docs=None, seq_len=32, global_batch=8, seed=0, process_index=0,
                  process_count=1, **kwargs):
    """A pipeline over a MADLAD-layout folder of generated documents (40 per language by default)."""
    root = tmp_path / "corpus"
    n_docs = n_docs or {}
    if not root.exists():
        write_madlad(root, {lang: make_docs(lang, n_docs.get(lang, 40), i)
                            for i, lang in enumerate(sorted(weights))})
    return P.make_train_pipeline(M.explicit(weights, name="test"), vocab="byte", seq_len=seq_len,
                                 global_batch=global_batch, seed=seed, root=str(root),
                                 process_index=process_index, process_count=process_count, **kwargs)


def observed_tokens(batches, n_langs):
    counts = np.zeros(n_langs)
    for b in batches:
        ids = b["decoder_lang_ids"].ravel()
        counts += np.bincount(ids[ids >= 0], weights=b["decoder_loss_weights"].ravel()[ids >= 0],
                              minlength=n_langs)
    return counts


def test_observed_shares_match_plan_within_one_percent(tmp_path):
    weights = {"en": 0.55, "fr": 0.3, "yo": 0.1, "sw": 0.05}
    pipe = make_pipeline(tmp_path, weights, n_docs={"yo": 12, "sw": 10}, seq_len=64, global_batch=16)
    batches = [next(pipe) for _ in range(300)]
    tokens = observed_tokens(batches, 4)
    shares = tokens / tokens.sum()
    planned = pipe.mixture.weight_array()
    assert np.abs(shares - planned).max() < 0.01
    # after the FIRST steps too: the schedule never drifts (within one batch of rows)
    early = observed_tokens(batches[:5], 4)
    assert np.abs(early / early.sum() - planned).max() < 1 / (5 * 16) + 1e-9
    acc = pipe.accounting()
    assert acc.tokens_by_lang == dict(zip(pipe.languages, tokens.astype(int).tolist()))
    assert acc.total == 300 * 16 * 64
    plan = M.plan_tokens(pipe.mixture, acc.total, acc.unique_by_lang, seq_len=64, global_batch=16)
    assert {k: v.tokens for k, v in plan.items()} == acc.tokens_by_lang
    assert acc.epochs_by_lang["yo"] == pytest.approx(plan["yo"].epochs)
    assert acc.epochs_by_lang["sw"] > 5  # small languages repeat many epochs


def test_restore_yields_identical_batches_and_accounting(tmp_path):
    weights = {"en": 0.5, "fr": 0.3, "yo": 0.2}
    kwargs = dict(n_docs={"yo": 10}, seed=3, block_docs=8)  # several blocks per file
    uninterrupted = make_pipeline(tmp_path, weights, **kwargs)
    reference = [next(uninterrupted) for _ in range(40)]
    first = make_pipeline(tmp_path, weights, **kwargs)
    for _ in range(25):
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    assert state["shards"]["0"]["yo"]["epoch"] >= 1  # the cut lies after an epoch boundary
    assert state["shards"]["0"]["en"]["line"] > 0 and state["shards"]["0"]["en"]["offset"] > 0  # mid-block
    resumed = make_pipeline(tmp_path, weights, **kwargs)
    resumed.set_state(state)
    assert resumed.accounting() == first.accounting()
    for expected in reference[25:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert resumed.accounting() == uninterrupted.accounting()
    assert resumed.get_state() == uninterrupted.get_state()
    # the seed picks the document orders: same seed, same stream; another seed, another stream
    other_seed = make_pipeline(tmp_path, weights, n_docs={"yo": 10}, seed=4, block_docs=8)
    other = [next(other_seed)["decoder_target_tokens"] for _ in range(5)]
    assert not all(np.array_equal(a, b["decoder_target_tokens"]) for a, b in zip(other, reference))


def test_set_state_rejects_other_pipelines(tmp_path):
    a = make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5})
    next(a)
    with pytest.raises(ValueError, match="seq_len"):
        make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5}, seq_len=16).set_state(a.get_state())
    with pytest.raises(ValueError, match="mixture"):
        make_pipeline(tmp_path, {"en": 0.4, "fr": 0.6}).set_state(a.get_state())
    broken = a.get_state()
    broken["languages"]["en"]["rows"] += 1
    with pytest.raises(ValueError, match="inconsistent"):
        make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5}).set_state(broken)
    # another input-shard count (another process count by default): refused with both numbers
    with pytest.raises(ValueError, match="num_input_shards=1 .*num_input_shards=2 \\(2 process"):
        make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5}, process_index=0, process_count=2).set_state(a.get_state())


def test_unique_fraction_trains_on_a_fixed_subset_and_counts_its_tokens(tmp_path):
    from atlas_t5x.data import stats

    weights = {"en": 0.5, "yo": 0.5}
    full = make_pipeline(tmp_path, weights, n_docs={"yo": 60}, block_docs=8)
    part = make_pipeline(tmp_path, weights, n_docs={"yo": 60}, block_docs=8, unique_fraction={"yo": 0.25})
    # U is the subset's tokens (+ one EOS per document), counted over the same hash rule the stream uses
    source = part.sources["yo"]
    kept = [t for t in source.documents("train") if stats.in_train_fraction(t, source.thresholds(), 0.25)]
    assert part.unique_by_lang["yo"] == sum(len(t.encode("utf-8")) + 1 for t in kept)
    assert 0 < part.unique_by_lang["yo"] < 0.5 * full.unique_by_lang["yo"]
    assert part.unique_by_lang["en"] == full.unique_by_lang["en"]
    # the stream only ever yields the subset's documents: every yo token comes from a kept text
    kept_bytes = set(b"".join(t.encode("utf-8") for t in kept))
    yo = part.languages.index("yo")
    for _ in range(30):
        batch = next(part)
        tokens = batch["decoder_target_tokens"][batch["decoder_lang_ids"] == yo]
        assert set((tokens[tokens >= 3] - 3).tolist()) <= kept_bytes     # byte vocab: id = byte + 3
    consumed = part.accounting().tokens_by_lang["yo"]
    assert consumed > 2 * part.unique_by_lang["yo"]                       # the subset repeats
    # resume keeps the fraction; another fraction is another pipeline
    state = part.get_state()
    with pytest.raises(ValueError, match="train_fractions"):
        make_pipeline(tmp_path, weights, n_docs={"yo": 60}, block_docs=8).set_state(state)
    with pytest.raises(ValueError, match=r"unique_fraction\['yo'\] must be in \(0, 1\], got 0"):
        make_pipeline(tmp_path, weights, n_docs={"yo": 60}, unique_fraction={"yo": 0})
    with pytest.raises(ValueError, match="'de' is not a language of mixture"):
        make_pipeline(tmp_path, weights, n_docs={"yo": 60}, unique_fraction={"de": 0.5})
    with pytest.raises(ValueError, match="use_cached=True is refused"):
        make_pipeline(tmp_path, weights, n_docs={"yo": 60}, unique_fraction={"yo": 0.5}, use_cached=True)


def test_use_cached_without_a_cache(tmp_path):
    """No seqio cache: "auto" streams, True names the missing Tasks and the folders searched, and
    neither leaves seqio's global cache dirs without the configured folder first (the full cached
    path: tests/test_preprocess_cache.py, which builds caches on Beam)."""
    saved = list(seqio.get_global_cache_dirs())
    empty = str(tmp_path / "no_cache")
    try:
        assert make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5}, use_cached="auto", cache_dirs=[empty]).cache_dirs == {}
        assert seqio.get_global_cache_dirs()[0] == empty
        with pytest.raises(ValueError, match=r"use_cached=True: no complete seqio cache \(COMPLETED\) of "
                                             r"\['madlad_en', 'madlad_fr'\] in the cache folders \['" + empty):
            make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5}, use_cached=True, cache_dirs=[empty])
        with pytest.raises(ValueError, match="use_cached must be 'auto', True or False, got 1"):
            make_pipeline(tmp_path, {"en": 0.5, "fr": 0.5}, use_cached=1)
    finally:
        seqio.set_global_cache_dirs(saved)


def test_processes_read_disjoint_shards_of_the_same_global_batch(tmp_path):
    weights = {"en": 0.6, "fr": 0.25, "yo": 0.15}
    whole = make_pipeline(tmp_path, weights, n_docs={"yo": 12}, global_batch=8, num_input_shards=2)
    parts = [make_pipeline(tmp_path, weights, n_docs={"yo": 12}, global_batch=8, process_index=i,
                           process_count=2) for i in range(2)]
    assert parts[0].rows == 4 and parts[0].num_input_shards == 2 and parts[1].owned_shards == [1]
    for _ in range(12):
        expected = next(whole)
        halves = [next(p) for p in parts]
        for key in expected:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), expected[key])
    assert parts[0].accounting() == parts[1].accounting() == whole.accounting()
    # each process reads its own share of every language: disjoint, and together all of it
    for lang in weights:
        shares = [set(parts[i].sources[lang].documents("train", i, 2)) for i in range(2)]
        assert not shares[0] & shares[1]
        assert shares[0] | shares[1] == set(madlad.load_split(str(tmp_path / "corpus"), lang, "train"))
    # the two processes' states (all-gathered) resume a ONE-process run with the same shards
    locals_ = []
    for p in parts:
        p._gather = lambda local: locals_.append(local) or [local]
        p.get_state()
    state = parts[0].get_state()
    state["shards"] = {**locals_[0], **locals_[1]}
    resumed = make_pipeline(tmp_path, weights, n_docs={"yo": 12}, global_batch=8, num_input_shards=2)
    resumed.set_state(json.loads(json.dumps(state)))
    for _ in range(3):
        expected = next(whole)
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    with pytest.raises(ValueError, match="divisible"):
        make_pipeline(tmp_path, weights, global_batch=6, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="num_input_shards 3"):
        make_pipeline(tmp_path, weights, global_batch=8, num_input_shards=3)


def test_packing_segments_positions_and_document_order(tmp_path):
    pipe = make_pipeline(tmp_path, {"en": 1.0}, n_docs={"en": 12}, seq_len=24, global_batch=2, seed=1)
    docs = madlad.load_split(str(tmp_path / "corpus"), "en", "train")
    epoch_len = pipe.unique_by_lang["en"]
    assert epoch_len == sum(len(VOCAB.encode(d)) + 1 for d in docs)  # U is the stream's epoch
    n_batches = -(-3 * epoch_len // 48)
    batches = [next(pipe) for _ in range(n_batches)]
    stream = np.concatenate([b["decoder_target_tokens"].ravel() for b in batches])
    inputs = np.concatenate([b["decoder_input_tokens"].ravel() for b in batches])
    epochs = [stream[e * epoch_len:(e + 1) * epoch_len] for e in range(3)]
    decoded = [sorted(VOCAB.decode(d.tolist()) for d in np.split(ep, np.flatnonzero(ep == 1)[:-1] + 1))
               for ep in epochs]
    assert all(d == sorted(t for t in docs) for d in decoded)  # every epoch: each doc exactly once
    assert not all(np.array_equal(epochs[0], ep) for ep in epochs[1:])  # reshuffled per epoch
    for b in batches:
        assert {k: v.dtype.name for k, v in b.items()} == {
            "decoder_input_tokens": "int32", "decoder_target_tokens": "int32",
            "decoder_segment_ids": "int32", "decoder_positions": "int32",
            "decoder_loss_weights": "float32", "decoder_lang_ids": "int32"}
        seg, pos = b["decoder_segment_ids"], b["decoder_positions"]
        tgt, inp = b["decoder_target_tokens"], b["decoder_input_tokens"]
        assert (b["decoder_loss_weights"] == 1).all() and (b["decoder_lang_ids"] == 0).all()
        for r in range(seg.shape[0]):
            starts = np.flatnonzero(np.diff(seg[r], prepend=0))
            assert starts[0] == 0 and (np.diff(seg[r]) >= 0).all()
            # a segment starts at the row start or right after an EOS
            assert all(tgt[r, s - 1] == VOCAB.eos_id for s in starts[1:])
            assert (pos[r][starts] == 0).all()
            expected_pos = np.arange(24) - starts[np.searchsorted(starts, np.arange(24), "right") - 1]
            np.testing.assert_array_equal(pos[r], expected_pos)
            within = np.ones(24, bool)
            within[starts] = False
            np.testing.assert_array_equal(inp[r][within], tgt[r][np.flatnonzero(within) - 1])
    # inputs are the stream shifted right, with BOS (0) at every document start
    doc_start = np.concatenate([[True], stream[:-1] == VOCAB.eos_id])
    np.testing.assert_array_equal(inputs, np.where(doc_start, 0, np.concatenate([[0], stream[:-1]])))


def test_bad_records_fail_naming_file_and_line_or_are_skipped_and_counted(tmp_path):
    root = tmp_path / "corpus"
    write_madlad(root, {"en": make_docs("en", 40, 0)})
    path = root / "yo" / "yo_clean_0000.jsonl.gz"
    path.parent.mkdir()
    lines = [json.dumps({"text": t}) for t in make_docs("yo", 30, 1)]
    lines[7] = '{"text": broken'
    lines[12] = '{"no_text": 1}'
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(madlad.CorpusError, match=f"{path}:8: not a valid JSON line"):
        make_pipeline(tmp_path, {"en": 0.5, "yo": 0.5})
    pipe = make_pipeline(tmp_path, {"en": 0.5, "yo": 0.5}, skip_bad_records=True)
    next(pipe)
    assert pipe.bad_records_by_lang() == {"en": 0, "yo": 2}  # one pass over yo's file so far
    assert pipe.unique_by_lang["yo"] == sum(len(VOCAB.encode(t)) + 1 for t in madlad.iter_split(
        str(root), "yo", "train", skip_bad_records=True))


def test_pack_eval_documents_budget_tokens_bytes_and_determinism():
    docs = make_docs("ja", 30, seed=2) + ["日本語のテキスト"]
    docs = docs[-1:] + docs[:-1]
    lengths = [len(VOCAB.encode(d)) + 1 for d in docs]
    budget = sum(lengths[:5]) + 3  # five whole documents fit, the sixth does not
    a = P.pack_eval_documents("ja", docs, VOCAB, seq_len=16, batch_size=4, token_budget=budget)
    b = P.pack_eval_documents("ja", docs, VOCAB, seq_len=16, batch_size=4, token_budget=budget)
    assert a.n_documents == 5 and a.n_tokens == sum(lengths[:5])
    assert a.n_bytes == sum(len(d.encode("utf-8")) for d in docs[:5])
    weights = np.concatenate([x["decoder_loss_weights"].ravel() for x in a.batches])
    assert weights.sum() == a.n_tokens
    assert all(x["decoder_target_tokens"].shape == (4, 16) for x in a.batches)
    for x, y in zip(a.batches, b.batches):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    flat = {k: np.concatenate([x[k].ravel() for x in a.batches]) for k in a.batches[0]}
    pad = flat["decoder_loss_weights"] == 0
    assert (flat["decoder_lang_ids"][pad] == -1).all() and (flat["decoder_segment_ids"][pad] == 0).all()
    scored = flat["decoder_target_tokens"][~pad]
    assert VOCAB.decode(scored[: lengths[0] - 1].tolist()) == "日本語のテキスト"
    one = P.pack_eval_documents("ja", docs, VOCAB, seq_len=16, batch_size=4, token_budget=1)
    assert one.n_documents == 1 and one.n_tokens == lengths[0]


# ---------------------------------------------------------------- over a MADLAD-layout folder


@pytest.fixture
def madlad_root(tmp_path):
    root = tmp_path / "madlad"
    write_madlad(root, {"en": make_docs("en", 60, 0), "fr": make_docs("fr", 40, 1),
                        "yo": make_docs("yo", 12, 2)})
    return root


def test_factory_unique_counts_cache_and_errors(madlad_root, tmp_path, monkeypatch):
    root = str(madlad_root)
    cache = str(tmp_path / "unique.json")
    pipe = P.make_train_pipeline("bilingual_en_yo", vocab="byte", seq_len=32, global_batch=4,
                                 root=root, process_index=0, process_count=1, unique_cache=cache)
    expected_u = {lang: sum(len(VOCAB.encode(t)) + 1 for t in madlad.load_split(root, lang, "train"))
                  for lang in ("en", "yo")}
    assert pipe.accounting().unique_by_lang == expected_u
    batch = next(pipe)
    assert batch["decoder_target_tokens"].shape == (4, 32)

    gin.bind_parameter("get_mixture.token_budget", 8_000)  # as gin/mixtures/unimax.gin does
    gin.bind_parameter("get_mixture.max_epochs", 2)
    try:
        unimax = P.make_train_pipeline("unimax", vocab="byte", seq_len=32, global_batch=4,
                                       root=root, process_index=0, process_count=1,
                                       unique_cache=cache)
    finally:
        gin.clear_config()
    plan = M.plan_tokens(unimax.mixture, 8_000, unimax.unique_by_lang)
    assert plan["yo"].epochs == pytest.approx(2, abs=2e-3)  # the smallest language is capped
    assert plan["en"].tokens == pytest.approx(plan["fr"].tokens, abs=1) and plan["fr"].epochs < 2
    assert unimax.languages == ["en", "fr", "yo"]  # every language under the root
    calls = []
    counting = stats.compute_language_stats
    monkeypatch.setattr(stats, "compute_language_stats",
                        lambda r, lang, *a, **k: calls.append(lang) or counting(r, lang, *a, **k))
    counts = accounting.cached_unique_counts(root, ["en", "fr", "yo"], VOCAB, cache)
    assert not calls and counts == {**expected_u, "fr": unimax.unique_by_lang["fr"]}
    # a changed folder: an error naming it for training, a recount of that language only on request
    write_madlad(madlad_root, {"yo": make_docs("yo", 15, 9)})
    with pytest.raises(madlad.CorpusError, match=f"language 'yo': folder {root}/yo changed since"):
        accounting.cached_unique_counts(root, ["en", "yo"], VOCAB, cache)
    with pytest.raises(madlad.CorpusError, match="language 'yo'.*changed"):
        P.make_train_pipeline("bilingual_en_yo", vocab="byte", seq_len=32, global_batch=4,
                              root=root, process_index=0, process_count=1, stats_path=cache)
    counts = accounting.cached_unique_counts(root, ["en", "yo"], VOCAB, cache, recount_changed=True)
    assert calls == ["yo"] and counts == {
        "en": expected_u["en"], "yo": sum(len(VOCAB.encode(t)) + 1 for t in madlad.load_split(root, "yo", "train"))}
    shutil.rmtree(madlad_root / "fr")
    with pytest.raises(madlad.CorpusError, match="language 'fr' is in statistics file .* cannot be read"):
        accounting.cached_unique_counts(root, ["fr"], VOCAB, cache)
    with pytest.raises(stats.StatsError, match="vocabulary"):
        accounting.cached_unique_counts(root, ["en"], "corpus_spm", cache)

    with pytest.raises(ValueError, match="qq"):
        P.make_train_pipeline({"en": 1, "qq": 1}, vocab="byte", root=root, process_index=0,
                              process_count=1)
    missing_folder = f"{madlad_root / 'de'} does not exist"  # a valid code absent from the root
    with pytest.raises(ValueError, match=missing_folder):
        P.make_train_pipeline("monolingual_de", vocab="byte", root=root, process_index=0,
                              process_count=1)
    with pytest.raises(ValueError, match="unknown mixture"):
        P.make_train_pipeline("12v9", vocab="byte", root=root, process_index=0, process_count=1)


def test_make_eval_set_over_validation_split(madlad_root):
    root = str(madlad_root)
    eval_set = P.make_eval_set("fr", VOCAB, 32, 2, 200, root=root)
    validation = madlad.load_split(root, "fr", "validation")
    taken = validation[: eval_set.n_documents]
    assert eval_set.n_tokens == sum(len(VOCAB.encode(t)) + 1 for t in taken) <= 200
    assert eval_set.n_bytes == sum(len(t.encode()) for t in taken)
    again = P.make_eval_set("fr", VOCAB, 32, 2, 200, root=root)
    assert all(np.array_equal(x["decoder_target_tokens"], y["decoder_target_tokens"])
               for x, y in zip(eval_set.batches, again.batches))
    test_set = P.make_eval_set("fr", VOCAB, 32, 2, 200, root=root, split="test")
    first_test = madlad.load_split(root, "fr", "test")[0]
    ids = (VOCAB.encode(first_test) + [VOCAB.eos_id])[:32]
    assert test_set.batches[0]["decoder_target_tokens"][0, :len(ids)].tolist() == ids
    with pytest.raises(ValueError, match="'train'"):
        P.make_eval_set("fr", VOCAB, 32, 2, 200, root=root, split="train")


def test_count_unique_cli(madlad_root, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "count_unique", os.path.join(os.path.dirname(__file__), "..", "scripts", "count_unique.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out_json = tmp_path / "u.json"
    args = [f"--root={madlad_root}", "--vocab=byte", f"--cache={tmp_path / 'c.json'}"]
    assert cli.main(args + ["--languages=fr,yo", f"--json={out_json}"]) == 0
    counts = json.loads(out_json.read_text())
    assert counts == {lang: accounting.count_unique_tokens(str(madlad_root), lang, VOCAB)
                      for lang in ("fr", "yo")}
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "cache" in printed and "counted" in printed  # fr, yo cached; en counted
    assert cli.main(args + ["--languages=qq"]) == 2
    assert cli.main([f"--root={tmp_path / 'missing'}", "--vocab=byte", "--cache="]) == 2


GIN_MIXTURES = [
    ("4v0", "4v0"), ("bilingual_es_pt", "bilingual_es_pt"), ("monolingual_en", "monolingual_en"),
    ("unimax", "unimax"), ("temperature", "temperature_T3.33"), ("explicit", "explicit"),
    ("uniform", "uniform4_en_ru_uk_yi")]


def test_every_gin_mixture_file_is_exercised():
    folder = os.path.join(os.path.dirname(__file__), "..", "gin", "mixtures")
    assert sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".gin")) == sorted(
        name for name, _ in GIN_MIXTURES)


@pytest.mark.parametrize("gin_name,mixture_name", GIN_MIXTURES)
def test_gin_mixture_files_select_the_mixture(gin_name, mixture_name):
    path = os.path.join(os.path.dirname(__file__), "..", "gin", "mixtures", f"{gin_name}.gin")
    gin.clear_config()
    try:
        gin.parse_config_file(path, skip_unknown=["train"])
        pipe = P.make_train_pipeline(vocab="byte", seq_len=16, global_batch=2, process_index=0,
                                     process_count=1)
    finally:
        gin.clear_config()
    assert pipe.mixture_name == mixture_name
    assert next(pipe)["decoder_target_tokens"].shape == (2, 16)
    if gin_name == "explicit":
        assert pipe.mixture_weights == pytest.approx({"en": 0.5, "ru": 0.25, "uk": 0.15, "yi": 0.1})
    if gin_name == "uniform":
        assert pipe.mixture_weights == {lang: 0.25 for lang in ("en", "ru", "uk", "yi")}
    if gin_name in ("unimax", "temperature"):
        assert pipe.languages == madlad.available_languages()  # every embedded language
        if gin_name == "unimax":  # the file's budget, 4M tokens: yi hits the 4-epoch cap
            plan = M.plan_tokens(pipe.mixture, 4 * 10**6, pipe.unique_by_lang)
            assert max(p.epochs for p in plan.values()) <= 4.0 + 1e-6
            assert plan["yi"].epochs == pytest.approx(4.0, abs=1e-3)


def test_seqio_mixtures_registered_over_madlad_tasks():
    import atlas_t5x_tasks as tasks
    from atlas_t5x_tasks import mixtures as task_mixtures

    names = task_mixtures.MADLAD_MIXTURES
    assert {"madlad_4v0", "madlad_bilingual_es_pt", "madlad_monolingual_en"} <= set(names)
    assert "madlad_12v0" not in names  # pl, vi are not in the embedded corpus
    # seqio samples documents, so each rate is the token share / mean tokens per document
    token_shares = lambda name: {  # noqa: E731
        t.name: seqio.get_mixture_or_task(name).get_rate(t) * task_mixtures.mean_document_tokens(t)
        for t in seqio.get_mixture_or_task(name).tasks}
    assert token_shares("madlad_4v0") == pytest.approx(
        {f"madlad_{lang}": 0.25 for lang in ("de", "es", "fr", "pt")})
    assert token_shares("madlad_bilingual_es_pt") == pytest.approx({"madlad_es": 0.5, "madlad_pt": 0.5})
    n = len(tasks.MADLAD_TASKS)
    assert len([m for m in names if "_bilingual_" in m]) == n * (n - 1) // 2
    with pytest.raises(ValueError, match="vi"):
        task_mixtures.register_mixture(M.capacity("8v0"))


def test_paper_run_refuses_a_small_vocabulary_unless_allowed(madlad_root):
    from atlas_t5x import models, optim, trainer  # noqa: F401  (configurables the gin files bind)
    from atlas_t5x.eval import callback  # noqa: F401

    repo = os.path.join(os.path.dirname(__file__), "..")
    gin.clear_config()
    kwargs = dict(mixture="bilingual_en_yo", root=str(madlad_root), process_index=0, process_count=1,
                  seq_len=32, global_batch=4)
    try:
        gin.add_config_file_search_path(repo)
        gin.parse_config_files_and_bindings(
            [os.path.join(repo, "gin", "models", "scale0.gin"), os.path.join(repo, "gin", "runs", "paper_base.gin")],
            ["make_train_pipeline.vocab = 'corpus_spm'"])
        with pytest.raises(ValueError, match="'corpus_spm' has 8192 pieces, fewer than min_vocab_size=64000"):
            P.make_train_pipeline(**kwargs)
        with gin.unlock_config():
            gin.bind_parameter("make_train_pipeline.min_vocab_size", 0)
        assert P.make_train_pipeline(**kwargs).vocab_size == 8192
        assert gin.query_parameter("%MADLAD_VOCAB") == "vocabs/madlad_spm_64k.model"
    finally:
        gin.clear_config()
    with pytest.raises(FileNotFoundError, match="madlad_spm_64k.model"):
        P.make_train_pipeline(vocab="vocabs/madlad_spm_64k.model", **kwargs)
