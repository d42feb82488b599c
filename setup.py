"""atlas_t5x: a JAX/Flax stack for multilingual scaling-law research (ATLAS)."""

from setuptools import find_packages, setup

# Compatible ranges: these versions install and import together on Python 3.11.
CORE = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
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
    "numpy>=2.0,<3",
    "scipy>=1.13,<2",
    "pandas>=2.2,<4",
    "pyarrow>=16,<30",
    "matplotlib>=3.9,<4",
    "scikit-learn>=1.5,<2",
    "threadpoolctl>=3.1,<4",
    "etils[epath]>=1.7,<2",
    "tqdm>=4.66,<5",
    "pyyaml>=6,<7",
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

setup(
    name="atlas_t5x",
    version="0.1.0",
    description="Multilingual scaling-law research: JAX/Flax pretraining stack, "
    "per-language hooks and the ATLAS fitter.",
    python_requires=">=3.11",
    packages=find_packages(include=["atlas_t5x", "atlas_t5x.*", "tasks", "tasks.*"]),
    include_package_data=True,
    install_requires=CORE,
    extras_require={"test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.100,<7"],
                    "beam": BEAM},
)
