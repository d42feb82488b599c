"""The packed train stream: shares, exact accounting, resume, multi-process slicing, packing, eval."""

import gzip
import json
import os

import gin
import numpy as np
import pytest
import seqio

from atlas_t5x.data import accounting, madlad
from atlas_t5x.data import mixtures as M
from atlas_t5x.data import pipeline as P

VOCAB = seqio.ByteVocabulary()
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def make_docs(lang: str, n_docs: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{lang}{i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 30))))
            for i in range(n_docs)]


def make_pipeline(weights, n_docs=None, seq_len=32, global_batch=8, seed=0, process_index=0,
                  process_count=1):
    mixture = M.explicit(weights, name="test")
    n_docs = n_docs or {}
    streams = {lang: P.LanguageStream(lang, accounting.encode_documents(
        make_docs(lang, n_docs.get(lang, 20), i), VOCAB), seed)
        for i, lang in enumerate(mixture.languages)}
    return P.TrainPipeline(mixture, streams, seq_len, global_batch, seed, process_index,
                           process_count, vocab_name="byte")


def observed_tokens(batches, n_langs):
    counts = np.zeros(n_langs)
    for b in batches:
        ids = b["decoder_lang_ids"].ravel()
        counts += np.bincount(ids[ids >= 0], weights=b["decoder_loss_weights"].ravel()[ids >= 0],
                              minlength=n_langs)
    return counts


def test_observed_shares_match_plan_within_one_percent():
    weights = {"en": 0.55, "fr": 0.3, "yo": 0.1, "sw": 0.05}
    pipe = make_pipeline(weights, n_docs={"yo": 3, "sw": 2}, seq_len=64, global_batch=16)
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
    assert acc.epochs_by_lang["sw"] > 20  # small languages repeat many epochs


def test_restore_yields_identical_batches_and_accounting():
    weights = {"en": 0.5, "fr": 0.3, "yo": 0.2}
    uninterrupted = make_pipeline(weights, n_docs={"yo": 2}, seed=3)
    reference = [next(uninterrupted) for _ in range(40)]
    first = make_pipeline(weights, n_docs={"yo": 2}, seed=3)
    for _ in range(25):
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    assert state["languages"]["yo"]["epoch"] >= 1  # the cut lies after an epoch boundary
    resumed = make_pipeline(weights, n_docs={"yo": 2}, seed=3)
    resumed.set_state(state)
    assert resumed.accounting() == first.accounting()
    for expected in reference[25:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert resumed.accounting() == uninterrupted.accounting()
    assert resumed.get_state() == uninterrupted.get_state()
    # the seed picks the document orders: same seed, same stream; another seed, another stream
    other_seed = make_pipeline(weights, n_docs={"yo": 2}, seed=4)
    other = [next(other_seed)["decoder_target_tokens"] for _ in range(5)]
    assert not all(np.array_equal(a, b["decoder_target_tokens"]) for a, b in zip(other, reference))


def test_set_state_rejects_other_pipelines():
    a = make_pipeline({"en": 0.5, "fr": 0.5})
    next(a)
    with pytest.raises(ValueError, match="seq_len"):
        make_pipeline({"en": 0.5, "fr": 0.5}, seq_len=16).set_state(a.get_state())
    with pytest.raises(ValueError, match="mixture"):
        make_pipeline({"en": 0.4, "fr": 0.6}).set_state(a.get_state())
    broken = a.get_state()
    broken["languages"]["en"]["rows"] += 1
    with pytest.raises(ValueError, match="inconsistent"):
        make_pipeline({"en": 0.5, "fr": 0.5}).set_state(broken)


def test_processes_slice_the_same_global_batch():
    weights = {"en": 0.6, "fr": 0.25, "yo": 0.15}
    whole = make_pipeline(weights, n_docs={"yo": 2}, global_batch=8)
    parts = [make_pipeline(weights, n_docs={"yo": 2}, global_batch=8, process_index=i,
                           process_count=2) for i in range(2)]
    assert parts[0].rows == 4
    for _ in range(12):
        expected = next(whole)
        halves = [next(p) for p in parts]
        for key in expected:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), expected[key])
    assert parts[0].accounting() == parts[1].accounting() == whole.accounting()
    with pytest.raises(ValueError, match="divisible"):
        make_pipeline(weights, global_batch=6, process_index=0, process_count=4)


def test_packing_segments_positions_and_document_order():
    docs = make_docs("en", 7, seed=5)
    encoded = accounting.encode_documents(docs, VOCAB)
    pipe = P.TrainPipeline(M.monolingual("en"), {"en": P.LanguageStream("en", encoded, 1)},
                           seq_len=24, global_batch=2, seed=1)
    epoch_len = encoded.num_tokens
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


def write_madlad(root, docs_by_lang):
    for lang, docs in docs_by_lang.items():
        os.makedirs(root / lang, exist_ok=True)
        with gzip.open(root / lang / f"{lang}_clean_0000.jsonl.gz", "wt", encoding="utf-8") as f:
            for text in docs:
                f.write(json.dumps({"text": text}) + "\n")


@pytest.fixture
def madlad_root(tmp_path):
    root = tmp_path / "madlad"
    write_madlad(root, {"en": make_docs("en", 60, 0), "fr": make_docs("fr", 40, 1),
                        "yo": make_docs("yo", 12, 2)})
    return root


def test_factory_unique_counts_cache_and_errors(madlad_root, tmp_path):
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
    counts = accounting.cached_unique_counts(root, ["en", "fr", "yo"], VOCAB, cache,
                                             counter=lambda *a: calls.append(a) or 0)
    assert not calls and counts == {**expected_u, "fr": unimax.unique_by_lang["fr"]}
    # a changed shard invalidates only that language's entry
    write_madlad(madlad_root, {"yo": make_docs("yo", 15, 9)})
    counts = accounting.cached_unique_counts(root, ["en", "yo"], VOCAB, cache,
                                             counter=lambda r, lang, v: calls.append(lang) or 7)
    assert calls == ["yo"] and counts == {"en": expected_u["en"], "yo": 7}

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
    import tasks
    from tasks import mixtures as task_mixtures

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
