"""atlas_t5x: a JAX/Flax stack for multilingual scaling-law research (ATLAS).

Importing the package picks JAX's CPU backend on a host that has neither a Google PCI device
(TPUs are Google PCI devices) nor an NVIDIA device node, unless ``JAX_PLATFORMS`` is set. With
the ``tpu`` extra installed (libtpu, for deviceless TPU compiles: ``atlas_t5x.aot``) JAX would
otherwise try to start a TPU runtime on such a host, which fails after printing libtpu's
warnings. ``jax.experimental.topologies.get_topology_desc(platform="tpu")`` works either way.
"""

import glob as _glob
import os as _os

_GOOGLE_PCI_VENDOR = "0x1ae0"


def _host_has_no_accelerator() -> bool:
    """True when no PCI device is Google's and no /dev/nvidia* node exists (cheap: sysfs reads)."""
    for vendor in _glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor) as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR:
                    return False
        except OSError:
            return False
    return not _glob.glob("/dev/nvidia*")


if "JAX_PLATFORMS" not in _os.environ and _host_has_no_accelerator():
    _os.environ["JAX_PLATFORMS"] = "cpu"
