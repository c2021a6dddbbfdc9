"""bfloat16 copies of a model, for CPUs (and GPUs) whose matrix units compute in bf16 natively.

On a CPU with AMX or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) PyTorch runs
bf16 matmuls through oneDNN several times faster than fp32. Measured on this project's 2-core test
machine: a cross-encoder scored 50 pairs at 128 tokens in 196 ms against 852 ms in fp32, and the
bundled embedder encoded CISI 2.1-2.8x faster (two days) at kNN nDCG@10 0.4218 against 0.4233 (bench/onnx_quality.py). Without those
units bf16 is emulated and slower than fp32, so such a copy warns when it is loaded there.

Not done: ``torch.compile`` (inductor, with freezing) of a bf16 cross-encoder. On the bare transformer it
cut 50 pairs at 128 tokens from 240-412 to 168-295 ms, but through sentence-transformers' ``predict`` the
gain vanished in the noise (p50 339 against 317 ms, 790 against 787 ms at 256 tokens, alternating), and
each process paid 30-55 s of compiling per model, twice (batch size 1 recompiles).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from unirank.errors import ConfigurationError, ModelLoadError, UnirankError
from unirank.registry.store import MARKER_FILE

#: The dtypes a registry version may name; fp32 versions name none.
DTYPES: tuple[str, ...] = ("bfloat16",)


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigurationError(f"Unknown dtype {dtype!r}: use one of {', '.join(DTYPES)} (fp32 needs no copy).")
    return dtype


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware rather than emulating them."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def refuse_emulated_bf16_training() -> None:
    """bf16 training is only worth it where bf16 is native; emulated, it is slower than fp32."""
    if not native_bf16("cpu"):
        raise ConfigurationError("bf16 training needs a CPU that computes bf16 natively (AMX or AVX512-BF16); "
                                 "this one would emulate it, slower than fp32. Train without --bf16.")


def torch_dtype_kwargs(path: str, dtype: str, device: str) -> dict:
    """``model_kwargs`` that load ``path``'s weights in ``dtype``; warns where it would run slowly."""
    import torch

    check_dtype(dtype)
    if not native_bf16(device):
        warnings.warn(f"{path} is a {dtype} copy, but {device} has no native bf16 (AMX or AVX512-BF16): it will "
                      "run slower than fp32 here. Serve its fp32 source or an ONNX copy on this machine.",
                      RuntimeWarning, stacklevel=3)
    return {"model_kwargs": {"dtype": getattr(torch, dtype)}}


def save_dtype_copy(source: Path, dest: Path, role: str, dtype: str, *,
                    max_seq_length: int | None = None) -> Path:
    """Copy the model folder ``source`` to ``dest`` with its weights stored in ``dtype``.

    ``max_seq_length`` shortens the copy's token window as the ONNX export does (a cross-encoder's
    cost grows with it). The weights are saved in ``dtype`` too, so the file is half the size.
    """
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from unirank.models.onnx_export import refuse_short_window, shorten_window

    check_dtype(dtype)
    refuse_short_window(max_seq_length)
    dest = Path(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("onnx", MARKER_FILE, "*.safetensors",
                                                                "pytorch_model.bin"))
    model_class = SentenceTransformer if role == "embedder" else CrossEncoder
    try:
        model = model_class(str(source), device="cpu", local_files_only=True,
                            model_kwargs={"dtype": getattr(torch, dtype)})
        if max_seq_length is not None:
            shorten_window(model, max_seq_length, source)
        model.save_pretrained(str(dest))
    except UnirankError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"Saving a {dtype} copy of {source} failed: {exc}") from exc
    return dest
