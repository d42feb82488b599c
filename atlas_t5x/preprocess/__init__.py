"""Corpus preprocessing at MADLAD scale on Apache Beam (optional extra: `pip install atlas_t5x[beam]`).

The same pipelines run locally on the DirectRunner and unchanged on Dataflow, Flink or Spark; the
runner is chosen by the standard Beam flags (`--runner`, `--direct_num_workers`,
`--direct_running_mode=multi_processing`, `--project`, `--region`, `--temp_location`, ...).

  * `statistics`: the per-language statistics file of atlas_t5x/data/stats.py (documents, bytes,
    tokens per split under a vocabulary, U), computed with the data layer's own per-document
    primitives, so it equals the single-process `stats.compute_stats` file byte for byte;
  * `vocab_sample`: the temperature-sampled sentence sample the SentencePiece trainer reads;
  * `seqio_cache`: offline caching of the `madlad_{lang}` seqio Tasks in seqio's cache format;
  * `beam_runtime`: pipeline options, and failures inside workers turned back into clear errors.

Importing this package needs apache_beam; the rest of atlas_t5x does not.
"""
