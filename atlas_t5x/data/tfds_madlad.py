"""TFDS builder `atlas_madlad`: a MADLAD-layout root as a TensorFlow Datasets dataset, one config per language.

    import atlas_t5x.data.tfds_madlad  # registers the builder
    ds = tfds.load("atlas_madlad/yo", split="train", data_dir="/data/tfds",
                   builder_kwargs={"root": "gs://bucket/madlad"})
    source = seqio.TfdsDataSource("atlas_madlad/yo:1.0.0", tfds_data_dir="/data/tfds")

Configs: every MADLAD-400 code of `atlas_t5x.languages.LANGUAGES` ("atlas_madlad/en", ...); a
config whose language folder is absent under the root fails at prepare time naming the folder.
The root is the builder argument `root`, else the data layer's default (gin
`resolve_madlad_dir.root`, $MADLAD_DIR, else the embedded corpus), so `tfds.load("atlas_madlad/de")`
reads the shipped corpus with nothing downloaded.

Splits train / validation / test are the data layer's (`stats.split_of` against the language's
thresholds from `madlad.language_thresholds`: the statistics file if given, else measured), so a
TFDS user sees exactly the documents the seqio Tasks and the trainer see. Each example is
{"text": str}, keyed by (shard file, line).

Generation runs on Apache Beam when it is installed (TFDS then builds a pipeline per split;
`tfds.download.DownloadConfig(beam_options=...)` picks the runner, e.g. Dataflow for a large
language), else in one Python process; both give the same examples. The dataset's metadata
records the root and thresholds it was built from; loading a prepared dataset with another
explicit root is refused rather than served from the old one.
"""

from __future__ import annotations

from typing import Any, Iterator

import tensorflow_datasets as tfds

from atlas_t5x import languages
from atlas_t5x.data import madlad
from atlas_t5x.data import stats as stats_lib

NAME = "atlas_madlad"


class MadladConfig(tfds.core.BuilderConfig):
    """One MADLAD-400 language."""

    def __init__(self, *, lang: str, **kwargs):
        super().__init__(name=lang, description=f"MADLAD-400 clean documents of {lang!r}", **kwargs)
        self.lang = lang


def _beam_available() -> bool:
    try:
        import apache_beam  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _split_examples(path: str, thresholds: stats_lib.SplitThresholds, split: str) -> Iterator[tuple[str, dict]]:
    """(key, example) of one shard's documents that belong to `split`."""
    name = path.rsplit("/", 1)[-1]
    for line, text in madlad.iter_shard(path, skip_bad_records=False):
        if stats_lib.split_of(text, thresholds) == split:
            yield f"{name}:{line}", {"text": text}


class AtlasMadlad(tfds.core.GeneratorBasedBuilder):
    """MADLAD-layout corpus, one config per language (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Hash splits of atlas_t5x.data.stats (split rule v2)."}
    BUILDER_CONFIGS = [MadladConfig(lang=code) for code in sorted(languages.LANGUAGES)]

    def __init__(self, *, root: str | None = None, stats_path: str | None = None,
                 use_beam: bool | None = None, **kwargs: Any):
        """`root`: MADLAD root (default: the data layer's); `stats_path`: statistics file for the
        split thresholds (default: gin / $MADLAD_STATS, else measured); `use_beam`: generate with
        Apache Beam (default: when installed)."""
        self._explicit_root = root
        self._root = madlad.resolve_madlad_dir(root)
        self._stats_path = stats_path
        self._use_beam = _beam_available() if use_beam is None else use_beam
        super().__init__(**kwargs)
        built_from = self.info.metadata.get("root") if self.info.metadata else None
        if root and built_from and built_from != stats_lib.normalize_root(root):
            raise madlad.CorpusError(f"TFDS dataset {self.name}/{self.builder_config.name} in "
                                     f"{self.data_dir} was built from root {built_from}, not "
                                     f"{stats_lib.normalize_root(root)}; use another data_dir")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage="https://github.com/google-research/google-research/tree/master/madlad_400",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        lang = self.builder_config.lang
        paths = madlad.shard_paths(self._root, lang)
        thresholds = madlad.language_thresholds(self._root, lang, self._stats_path)
        self.info.metadata.update({"root": stats_lib.normalize_root(self._root), "language": lang,
                                   "thresholds": thresholds.to_json(),
                                   "files": stats_lib.listed_files(self._root, lang)})
        return {split: self._generate_examples(paths, thresholds, split) for split in madlad.SPLITS}

    def _generate_examples(self, paths: list[str], thresholds: stats_lib.SplitThresholds, split: str):
        if self._use_beam:
            import apache_beam as beam  # noqa: PLC0415

            return (beam.Create(paths)
                    | f"Reshuffle_{split}" >> beam.Reshuffle()
                    | f"Read_{split}" >> beam.FlatMap(_split_examples, thresholds=thresholds, split=split))
        return self._generate_in_process(paths, thresholds, split)

    @staticmethod
    def _generate_in_process(paths, thresholds, split):
        for path in paths:
            yield from _split_examples(path, thresholds, split)
