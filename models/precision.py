"""Which number format the engine scores in: ``auto``, ``fp32``, ``bf16`` or ``int8`` (docs/model.md).

``auto`` is bf16 on CUDA and on CPUs with bf16 matrix instructions (AMX or AVX-512 BF16, read from
the CPU's flags at run time), fp32 elsewhere: bf16 without them is emulated and slower than fp32.
int8 (dynamic quantization) scales activations per batch, so a score depends on its batch-mates;
it is never chosen by ``auto``. No torch import here: the CLI parses flags before torch loads.
"""
from __future__ import annotations

from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16", "int8")
FAST_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The ``flags`` of the first CPU in /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    return not FAST_BF16_FLAGS.isdisjoint(cpu_flags() if flags is None else flags)


def resolve_precision(precision: str, device_type: str, flags: frozenset[str] | None = None) -> str:
    """``auto`` -> the fastest batch-independent format for this device; others are checked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "int8" and device_type != "cpu":
        raise ValueError("int8 is a CPU path; use --device cpu or another --precision")
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" or cpu_has_fast_bf16(flags) else "fp32"


def add_precision_args(group) -> None:
    """``--precision`` (env TICKERPULSE_PRECISION) and ``--quantize``, kept as the alias of int8."""
    from pipeline.cli_args import env_default, env_flag

    group.add_argument("--precision", choices=PRECISIONS,
                       default="int8" if env_flag("quantize") else env_default("precision", "auto"),
                       help="auto (default): bf16 on CUDA and on CPUs with AMX or AVX-512 BF16, else fp32; "
                            "int8: CPU dynamic quantization, faster but a score then depends on its batch")
    group.add_argument("--quantize", dest="precision", action="store_const", const="int8",
                       help="the same as --precision int8")
