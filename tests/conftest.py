"""Test setup: 8 host CPU devices for mesh tests, and the shared reference data location."""

import os
from pathlib import Path

# Must be set before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# CPU only, also with libtpu installed (the `tpu` extra): JAX would otherwise try a TPU runtime.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config):
    # `make test` runs everything; CI's fixed fast sample is `-m "not slow"`.
    config.addinivalue_line("markers", "slow: a costlier variant of a test whose fast sample runs by default")


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    return SHARED_DATA
