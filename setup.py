"""atlas_t5x: a JAX/Flax stack for multilingual scaling-law research (ATLAS)."""

from setuptools import find_packages, setup

# Compatible ranges: these versions install and import together on Python 3.11.
#
# The base install is the fitter side: atlas_t5x.scaling, the planners, reports and the atlas-fit,
# atlas-plan, atlas-transfer, atlas-report and atlas-export commands. It needs no TensorFlow,
# seqio, gin, Flax, optax or orbax (tests/test_fitter_imports.py). JAX stays in the base: the
# fitter's gradient polish and batched Levenberg-Marquardt use JAX's float64 autodiff and jit.
FIT = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "numpy>=2.0,<3",
    "scipy>=1.13,<2",
    "pandas>=2.2,<4",
    "pyarrow>=16,<30",
    "matplotlib>=3.9,<4",
    "scikit-learn>=1.5,<2",
    "threadpoolctl>=3.1,<4",
    "etils[epath]>=1.7,<2",   # logio: gs:// and other remote log paths
    "tqdm>=4.66,<5",
    "pyyaml>=6,<7",
]

# Training, evaluation hooks, data pipeline and sweeps: `pip install 'atlas_t5x[train]'`.
TRAIN = [
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "seqio>=0.0.20,<0.1",
    "tensorflow>=2.21,<2.22",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources>=6,<8",  # TFDS 4.9.10 imports it for any builder outside its tree, lists it for Py<3.9 only
    "gin-config>=0.5,<0.6",
    "sentencepiece>=0.2,<0.3",
    "clu>=0.0.12,<0.1",
    "tensorboard>=2.20,<3",
    "absl-py>=2.1,<3",
]

# Corpus preprocessing on Apache Beam (atlas_t5x.preprocess): an extra, because Beam caps protobuf
# below 7 and pyarrow below 26, and sentencepiece 0.2.3's generated code needs protobuf >= 7.36.
# With protobuf 6.33 / sentencepiece 0.2.2, TensorFlow 2.21, seqio and TFDS import and tokenise
# identically (checked: `pip check`, same ids on the embedded corpus).
BEAM = [
    "apache-beam[tfrecord]>=2.72,<3",   # tfrecord: the crc seqio.scripts.cache_tasks_main writes with
    "protobuf>=6.31.1,<7",
    "sentencepiece>=0.2,<0.2.3",
]

# Deviceless TPU compiles (atlas_t5x.aot, `atlas-sweep --rehearse`): libtpu for our jax, which
# runs XLA:TPU and Mosaic on any host (no TPU needed); also what a TPU VM trains with.
TPU = [
    "jax[tpu]==0.10.2; sys_platform == 'linux'",  # libtpu ships Linux wheels only
    "libtpu==0.0.42.1; sys_platform == 'linux'",  # what jax[tpu] 0.10.2 resolves to, pinned: reproducible compiles
]

setup(
    name="atlas_t5x",
    version="0.1.0",
    description="Multilingual scaling-law research: JAX/Flax pretraining stack, "
    "per-language hooks and the ATLAS fitter.",
    license="Apache-2.0",
    python_requires=">=3.11",
    # The seqio registrations live in the repository's top-level tasks/ folder but install (and
    # import) as `atlas_t5x_tasks`, so site-packages gets no package with the generic name `tasks`.
    packages=find_packages(include=["atlas_t5x", "atlas_t5x.*"]) + ["atlas_t5x_tasks"],
    package_dir={"atlas_t5x_tasks": "tasks"},
    include_package_data=True,
    install_requires=FIT,
    extras_require={"train": TRAIN,
                    "fit": [],   # the base install: an explicit name for `pip install atlas_t5x[fit]`
                    "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.100,<7"],
                    "beam": BEAM,
                    "tpu": TPU},
    entry_points={"console_scripts": [
        # fitter side (base install)
        "atlas-fit=atlas_t5x.cli.fit:main",
        "atlas-plan=atlas_t5x.cli.plan:main",
        "atlas-transfer=atlas_t5x.cli.transfer:main",
        "atlas-report=atlas_t5x.cli.report:main",
        "atlas-export=atlas_t5x.cli.export:main",
        # training side (needs the `train` extra; each says so in one line without it)
        "atlas-train=atlas_t5x.cli.train:main",
        "atlas-sweep=atlas_t5x.cli.sweep:main",
        "atlas-demo=atlas_t5x.cli.demo:main",
        "atlas-mesh-plan=atlas_t5x.cli.mesh_plan:main",
        "atlas-corpus-stats=atlas_t5x.cli.corpus_stats:main",
        "atlas-count-unique=atlas_t5x.cli.count_unique:main",
        "atlas-train-vocab=atlas_t5x.cli.train_vocab:main",
        "atlas-build-corpus=atlas_t5x.cli.build_corpus:main",
    ]},
)
