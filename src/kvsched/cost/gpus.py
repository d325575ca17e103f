"""GPU datasheet numbers for the roofline cost model (`kvsched.cost.roofline`).

Dense numbers only: vendors print tensor-core peaks "with sparsity" (2:4 structured sparsity,
twice the dense figure); the table holds the dense one, which is what an LLM's dense GEMMs can
reach. Each row cites the datasheet it was read from (the vendor's product page / PDF, as titled
there). Units: FLOP/s, bytes/s, bytes.

- ``dense_bf16_flops``: peak dense BF16 (= FP16) tensor-core throughput per GPU.
- ``hbm_bandwidth``: peak memory bandwidth per GPU (decimal: TB/s · 10¹²).
- ``memory_bytes``: memory per GPU. Vendors write "80GB" for 80 GiB of HBM (nvidia-smi reports
  81,920 MiB on an A100-80GB); the table counts ``GB`` as 2³⁰ bytes, as Vidur and
  `kvsched.cost.presets` do. H200's "141GB" and MI300X's "192GB" are likewise read as GiB.
- ``interconnect_bandwidth``: the GPU-to-GPU bandwidth the datasheet gives per GPU, *both
  directions together* (NVLink's 600/900 GB/s, PCIe's 64/128 GB/s for x16 Gen4/Gen5). The roofline
  uses half of it (one direction) for a ring all-reduce. Parts without NVLink use PCIe.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

TERA = 1e12
GIB = 1024 ** 3


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU model's datasheet figures (see the module docstring for units)."""

    name: str
    dense_bf16_flops: float
    hbm_bandwidth: float
    memory_bytes: int
    interconnect_bandwidth: float
    interconnect: str
    source: str

    def __post_init__(self) -> None:
        if min(self.dense_bf16_flops, self.hbm_bandwidth, self.memory_bytes, self.interconnect_bandwidth) <= 0:
            raise ValueError(f"GPU {self.name}: every datasheet figure must be > 0")


_A100 = "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com, A100 80GB/40GB SXM columns)"
GPUS: dict[str, GPUSpec] = {g.name: g for g in (
    GPUSpec("a100-40gb", 312 * TERA, 1555e9, 40 * GIB, 600e9, "NVLink 3", _A100),
    GPUSpec("a100-80gb", 312 * TERA, 2039e9, 80 * GIB, 600e9, "NVLink 3", _A100),
    GPUSpec("h100-sxm", 989.4 * TERA, 3350e9, 80 * GIB, 900e9, "NVLink 4",
            "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com, H100 SXM column; 1,979 TFLOPS is with sparsity)"),
    GPUSpec("h100-pcie", 756 * TERA, 2000e9, 80 * GIB, 128e9, "PCIe Gen5 x16",
            "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com, H100 PCIe column; 1,513 TFLOPS is with "
            "sparsity; its 600 GB/s NVLink bridge joins pairs only)"),
    GPUSpec("h200", 989.4 * TERA, 4800e9, 141 * GIB, 900e9, "NVLink 4",
            "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com, H200 SXM column; 1,979 TFLOPS is with sparsity)"),
    GPUSpec("b200", 2250 * TERA, 8000e9, 180 * GIB, 1800e9, "NVLink 5",
            "NVIDIA HGX B200 datasheet (nvidia.com: 8 GPUs, 36 PFLOPS FP16/BF16 with sparsity = 2.25 "
            "PFLOPS dense per GPU, 1.44 TB and 64 TB/s in all = 180 GB and 8 TB/s per GPU)"),
    GPUSpec("l40s", 362.05 * TERA, 864e9, 48 * GIB, 64e9, "PCIe Gen4 x16",
            "NVIDIA L40S GPU datasheet (nvidia.com; BF16 362.05 dense, 733 TFLOPS with sparsity)"),
    GPUSpec("l4", 121 * TERA, 300e9, 24 * GIB, 64e9, "PCIe Gen4 x16",
            "NVIDIA L4 Tensor Core GPU datasheet (nvidia.com; BF16 121 dense, 242 TFLOPS with sparsity)"),
    GPUSpec("mi300x", 1307.4 * TERA, 5300e9, 192 * GIB, 896e9, "Infinity Fabric (7 links x 128 GB/s)",
            "AMD Instinct MI300X accelerator datasheet (amd.com; BF16 1,307.4 dense, 2,614.9 TFLOPS with sparsity)"),
)}


def get_gpu(name: str) -> GPUSpec:
    """The GPU called `name` (case-insensitive); `ConfigError` naming the known ones otherwise."""
    try:
        return GPUS[name.strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown GPU {name!r}; expected one of {', '.join(GPUS)}") from None
