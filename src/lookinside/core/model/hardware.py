"""Known GPUs' peak memory bandwidth, for the speed-of-light line of `llm bench`.

`bandwidth_for(name, total_memory)` maps the name CUDA reports (torch.cuda.get_device_name)
to the vendor's published peak bandwidth, or None for a GPU the table does not know.
No torch here: the caller reads the name and memory size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GB = 1e9  # bandwidth is quoted in decimal GB/s


@dataclass(frozen=True)
class KnownGPU:
    """One GPU model and its published peak memory bandwidth."""

    label: str
    bandwidth_gbs: float  # GB/s, decimal, as the datasheet quotes it
    source: str


# Peak DRAM/HBM bandwidth as NVIDIA publishes it in each GPU's datasheet (decimal GB/s):
#   T4:          320 GB/s GDDR6        - "NVIDIA T4 Tensor Core GPU" datasheet
#   A10 / A10G:  600 GB/s GDDR6        - "NVIDIA A10 Tensor Core GPU" datasheet (AWS's A10G: same bus)
#   L4:          300 GB/s GDDR6        - "NVIDIA L4 Tensor Core GPU" datasheet
#   A100 40GB:   1,555 GB/s HBM2       - "NVIDIA A100 Tensor Core GPU" datasheet (PCIe and SXM)
#   A100 80GB:   1,935 GB/s PCIe, 2,039 GB/s SXM (HBM2e) - same datasheet
#   H100 SXM:    3.35 TB/s HBM3; H100 PCIe: 2.0 TB/s HBM2e; H100 NVL: 3.9 TB/s
#                                      - "NVIDIA H100 Tensor Core GPU" datasheet
#   H200:        4.8 TB/s HBM3e (SXM and NVL) - "NVIDIA H200 Tensor Core GPU" datasheet
# Order matters: the first pattern that matches the reported name wins, so the more
# specific names (A100 80GB PCIe, H100 PCIe) come before the general ones.
_A100 = "NVIDIA A100 datasheet"
_TABLE: tuple[tuple[str, KnownGPU], ...] = (
    (r"\bT4\b", KnownGPU("T4", 320, "NVIDIA T4 datasheet")),
    (r"\bA10G?\b", KnownGPU("A10", 600, "NVIDIA A10 datasheet")),
    (r"\bL4\b", KnownGPU("L4", 300, "NVIDIA L4 datasheet")),
    (r"\bA100\b.*80\s*GB.*PCI|\bA100\b.*PCI.*80\s*GB", KnownGPU("A100 80GB PCIe", 1935, "NVIDIA A100 datasheet")),
    (r"\bA100\b.*80\s*GB", KnownGPU("A100 80GB SXM", 2039, "NVIDIA A100 datasheet")),
    (r"\bA100\b.*40\s*GB", KnownGPU("A100 40GB", 1555, "NVIDIA A100 datasheet")),
    (r"\bH100\b.*NVL", KnownGPU("H100 NVL", 3900, "NVIDIA H100 datasheet")),
    (r"\bH100\b.*PCI", KnownGPU("H100 PCIe", 2000, "NVIDIA H100 datasheet")),
    (r"\bH100\b", KnownGPU("H100 SXM", 3350, "NVIDIA H100 datasheet")),
    (r"\bH200\b", KnownGPU("H200", 4800, "NVIDIA H200 datasheet")),
)
_GIB = 1024**3


def known_gpu(name: str, total_memory: int | None = None) -> KnownGPU | None:
    """The table's entry for a CUDA device name, or None when the GPU is not in the table."""
    for pattern, gpu in _TABLE:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return gpu
    # Some A100s report only "NVIDIA A100-SXM4" or "A100-PCIE": tell 40 from 80 GB by memory size.
    if re.search(r"\bA100\b", name, flags=re.IGNORECASE) and total_memory:
        if total_memory < 60 * _GIB:
            return KnownGPU("A100 40GB", 1555, _A100)
        if "PCI" in name.upper():
            return KnownGPU("A100 80GB PCIe", 1935, _A100)
        return KnownGPU("A100 80GB SXM", 2039, _A100)
    return None


def known_names() -> list[str]:
    """The GPUs the table knows, for messages."""
    return sorted({gpu.label for _, gpu in _TABLE})
