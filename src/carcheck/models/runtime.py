"""Where and how the networks run: the numeric precision chosen by the hardware, and threads.

bf16 autocast is a speed-up only on CPUs that execute bf16 natively (AVX512-BF16 or AMX tiles):
measured on an AVX2-only AMD EPYC, the Lite0 backbone took 2.3 s per 512 px photo under bf16
autocast against 0.13 s in fp32 (issue 13), while on an AVX512-BF16 CPU the whole assessment ran 1.3x faster in bf16 than
in fp32 (0.122 vs 0.159 s per photo, bench/speed/speed.py). ``auto``, the default everywhere, therefore asks torch what the CPU can
do (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``) and uses bf16 only there
or on CUDA, else fp32 (training, feature caches). The assessment resolves precision and engine together
(:func:`resolve_runtime`): fp32 on ONNX Runtime wherever it is installed, faster still than eager bf16.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Literal

__all__ = ["PRECISIONS", "ENGINES", "Precision", "bf16_native", "resolve_precision", "use_bf16", "resolve_engine",
           "resolve_runtime", "available_cores", "set_threads", "cpu_info"]

#: The precisions a user can ask for.
PRECISIONS = ("auto", "fp32", "bf16")
Precision = Literal["auto", "fp32", "bf16"]


@lru_cache(maxsize=1)
def bf16_native() -> bool:
    """True when this CPU executes bf16 natively (AVX512-BF16 or AMX tiles), as torch reports it."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(f()) for f in checks if f is not None)


def resolve_precision(precision: str = "auto", device: str = "cpu") -> Literal["fp32", "bf16"]:
    """The precision actually used: ``auto`` -> ``bf16`` on CUDA or a CPU with native bf16, else ``fp32``.

    Args:
        precision: ``auto`` | ``fp32`` | ``bf16`` (``bf16`` is honoured even where it is slow). The
            environment variable ``CARCHECK_PRECISION=fp32|bf16`` sets what ``auto`` resolves to.
        device: ``cpu`` or a CUDA device string (``cuda``, ``cuda:0``).
    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    forced = os.environ.get("CARCHECK_PRECISION", "")
    if forced in ("fp32", "bf16"):  # what "auto" means on this machine, set by its operator (or a test run)
        return forced  # type: ignore[return-value]
    if str(device).startswith("cuda"):
        return "bf16"
    return "bf16" if bf16_native() else "fp32"


def use_bf16(precision: str = "auto", device: str = "cpu") -> bool:
    """``resolve_precision(...) == "bf16"``: whether to enter bf16 autocast."""
    return resolve_precision(precision, device) == "bf16"


#: The inference engines a user can ask for.
ENGINES = ("auto", "torch", "onnx")


def resolve_engine(engine: str = "auto", precision: str = "fp32") -> Literal["torch", "onnx"]:
    """The engine actually used for the shared pass, the decoders and the identity models.

    ``auto``, given an already resolved precision: ONNX Runtime for fp32 (0.106 vs 0.159 s per photo for
    eager torch fp32, bench/speed/speed.py on the AMD EPYC of an earlier session), eager torch for bf16 (ONNX Runtime runs these graphs in fp32
    only); torch when onnxruntime is not installed. The assessment resolves both together with
    :func:`resolve_runtime`, whose ``auto`` / ``auto`` is fp32 on ONNX Runtime wherever it is installed.

    Args:
        engine: ``auto`` | ``torch`` | ``onnx`` (``CARCHECK_ENGINE=torch|onnx`` sets what ``auto`` resolves to).
        precision: the RESOLVED precision (``fp32`` | ``bf16``, from :func:`resolve_precision`).
    Raises:
        ValueError: an unknown engine, ``onnx`` with ``bf16``, or ``onnx`` without onnxruntime.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    have_ort = _have_onnxruntime()
    if engine == "onnx":
        if precision == "bf16":
            raise ValueError("the onnx engine computes in fp32: use --precision fp32 (or auto) with it")
        if not have_ort:
            raise ValueError("the onnx engine needs onnxruntime (pip install onnxruntime)")
        return "onnx"
    if engine == "torch":
        return "torch"
    forced = os.environ.get("CARCHECK_ENGINE", "")
    if forced in ("torch", "onnx"):  # what "auto" means on this machine, set by its operator
        return resolve_engine(forced, precision)
    return "onnx" if precision == "fp32" and have_ort else "torch"


def resolve_runtime(precision: str = "auto", engine: str = "auto", device: str = "cpu") -> tuple[str, str]:
    """``(precision, engine)`` the assessment actually uses, resolved together.

    On a CPU, ``auto`` / ``auto`` means ONNX Runtime in fp32 wherever onnxruntime is installed: measured
    with ``bench/speed/speed.py`` it was never slower than eager torch in bf16 (AMD EPYC with AVX512-BF16:
    0.141 vs 0.174 s per photo in the last run, within noise in an earlier one; Intel Xeon with AMX-bf16,
    eight runs: 0.237-0.264 vs 0.274-0.303 s) and far faster than bf16 autocast on CPUs without native
    bf16; its findings on the real cases matched torch bf16's (``bench/cases.py --set engine='"onnx"'``,
    issue 26). An explicitly requested ONNX
    engine (``engine="onnx"`` or ``CARCHECK_ENGINE=onnx``) also makes ``precision="auto"`` mean fp32, the
    only precision it runs in. Explicit ``bf16``, ``CARCHECK_PRECISION``, ``CARCHECK_ENGINE=torch``, a CUDA
    device or a missing onnxruntime keep torch (:func:`resolve_precision`, :func:`resolve_engine`).

    Raises:
        ValueError: as :func:`resolve_precision` / :func:`resolve_engine` (e.g. ``onnx`` with ``bf16``).
    """
    forced_engine = os.environ.get("CARCHECK_ENGINE", "")
    wants_onnx = engine == "onnx" or (engine == "auto" and forced_engine == "onnx")
    auto_onnx = (engine == "auto" and precision == "auto" and forced_engine not in ("torch", "onnx")
                 and not os.environ.get("CARCHECK_PRECISION") and not str(device).startswith("cuda")
                 and _have_onnxruntime())
    if (wants_onnx or auto_onnx) and precision == "auto":
        precision = "fp32"
    resolved = resolve_precision(precision, device)
    return resolved, resolve_engine(engine, resolved)


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads for this process (and OpenMP's, for libraries started later).

    Several worker processes on one machine must split the cores between them: two processes of 2
    threads each on 2 cores made a forward pass 20x slower on the AVX2 machine of issue 13 (OpenMP
    oversubscription; helpers' jobs running beside benchmarks slowed eager torch ~10x this session).

    Args:
        threads: threads for this process; None -> every core this process may use.
    Returns:
        the number of threads set.
    """
    import torch

    n = int(threads) if threads else available_cores()
    os.environ["OMP_NUM_THREADS"] = str(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def trim_heap() -> bool:
    """Hand freed heap memory back to the operating system (glibc ``malloc_trim(0)``).

    glibc keeps memory freed by large temporary arrays (a decoded photo, a network's activations)
    in its arenas, so a long case's resident set creeps upwards photo by photo (issue 20: +240 MB
    over one 1,000-file case); trimming after each photo keeps it at its working size. Takes about
    0.2 ms (measured on the 2-core EPYC after freeing a 27 MB array).

    Returns:
        True when trimmed; False where the C library has no ``malloc_trim`` (musl, macOS, Windows).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM is False:
        return False
    _MALLOC_TRIM(0)
    return True


_MALLOC_TRIM = None


def cpu_info() -> dict:
    """What a benchmark JSON records about the machine: CPU model, cores, bf16 support, torch version."""
    import torch

    model = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(), "bf16_native": bf16_native(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
