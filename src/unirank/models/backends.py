"""Which inference backend a model runs on: PyTorch (default) or ONNX Runtime, chosen per registry version.

``unirank models optimize`` registers an ONNX version with ``backend: "onnx"`` and ``onnx_file`` in its
record; loading passes both to sentence-transformers, which runs the file with ONNX Runtime. With
``--dtype bfloat16`` it registers a PyTorch version with ``dtype: "bfloat16"`` instead, loaded in bf16.
With ``--provider openvino`` the ONNX file runs on ONNX Runtime's OpenVINO execution provider
(``onnx_provider: "openvino"``), in bf16 when the record also names ``dtype: "bfloat16"``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirank.errors import ModelLoadError
from unirank.models.precision import check_dtype, native_bf16, torch_dtype_kwargs

if TYPE_CHECKING:
    from unirank.registry.store import ModelVersion

BACKENDS: tuple[str, ...] = ("torch", "onnx")
#: How the ONNX export traces attention (see unirank.models.onnx_export); recorded with each ONNX copy.
ONNX_ATTENTION = "eager"
#: ONNX Runtime execution providers a version may name, and their ONNX Runtime names.
ONNX_PROVIDERS: dict[str, str] = {"cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


def backend_kwargs(path: str, backend: str, onnx_file: str | None, dtype: str | None = None,
                   device: str = "cpu", onnx_provider: str = "cpu") -> dict[str, Any]:
    """Keyword arguments for ``SentenceTransformer``/``CrossEncoder`` that select the backend.

    A missing ONNX file is refused here: sentence-transformers would otherwise quietly export a new
    fp32 model in its place, which is not the file the registry promised.
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"Unknown backend {backend!r} for {path}: use one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return torch_dtype_kwargs(path, dtype, device) if dtype else {}
    if not onnx_file:
        raise ModelLoadError(f"{path} is registered with backend onnx but names no onnx_file; "
                             "re-run `unirank models optimize` on its source version.")
    if not (Path(path) / onnx_file).is_file():
        raise ModelLoadError(f"{Path(path) / onnx_file} is missing; re-run `unirank models optimize` "
                             "on the source version to export it again.")
    provider = require_onnx_provider(onnx_provider, path, dtype)
    # Named even for the CPU provider: sentence-transformers would otherwise take the first available
    # one, which is OpenVINO in that build, and it runs the int8 files slower than the CPU provider.
    model_kwargs: dict[str, Any] = {"file_name": onnx_file, "provider": provider}
    if onnx_provider == "openvino":
        model_kwargs["provider_options"] = openvino_options(path, dtype)
    return {"backend": "onnx", "model_kwargs": model_kwargs}


def onnx_provider_available(onnx_provider: str) -> bool:
    """Whether this ONNX Runtime build has ``onnx_provider`` (a key of ``ONNX_PROVIDERS``)."""
    import onnxruntime

    return ONNX_PROVIDERS[onnx_provider] in onnxruntime.get_available_providers()


def require_onnx_provider(onnx_provider: str, path: str, dtype: str | None = None) -> str:
    """ONNX Runtime's name for ``onnx_provider``, once it is known to be installed here and to compute
    in ``dtype`` (the CPU provider runs the file's own types)."""
    if onnx_provider not in ONNX_PROVIDERS:
        raise ModelLoadError(f"{path} names ONNX provider {onnx_provider!r}: use one of {', '.join(ONNX_PROVIDERS)}.")
    if dtype and onnx_provider == "cpu":
        raise ModelLoadError(f"{path} names dtype {dtype!r}, but ONNX Runtime's CPU provider computes in the file's "
                             "own types: for bf16 use the OpenVINO provider (--provider openvino), or a PyTorch copy "
                             "(--dtype alone).")
    try:
        import onnxruntime
        import optimum.onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"{path} runs on ONNX Runtime, which is not installed: "
                             "pip install 'unirank[onnx]'.") from exc
    if not onnx_provider_available(onnx_provider):
        raise ModelLoadError(
            f"{path} runs on ONNX Runtime's {ONNX_PROVIDERS[onnx_provider]}, which this ONNX Runtime build lacks (it "
            f"has {', '.join(onnxruntime.get_available_providers())}). Install its OpenVINO build in place of the plain "
            "one (pip uninstall onnxruntime && pip install onnxruntime-openvino; x86-64 only), or use an ONNX copy "
            "made without --provider.")
    return ONNX_PROVIDERS[onnx_provider]


def openvino_options(path: str, dtype: str | None) -> dict[str, str]:
    """The OpenVINO provider's options: CPU, computing in bf16 only when asked and native here.

    The precision is set either way: left to itself the provider runs fp32 even on AMX. OpenVINO's own
    runtime was measured as the alternative (50 pairs at 256 tokens, bf16, same process): 355 ms from this
    ONNX file and 330 ms from the PyTorch model converted directly, against 390 ms through this provider.
    Most of the rest is the AMX matrix products (~150 ms) and an unfused attention (~120 ms) either way,
    so a second runtime and its dependencies were not worth ~10-15 %."""
    precision = "f32"
    if dtype:
        check_dtype(dtype)
        if native_bf16("cpu"):
            precision = "bf16"
        else:
            warnings.warn(f"{path} asks OpenVINO for {dtype}, but this CPU has no native bf16 (AMX or "
                          "AVX512-BF16): it runs in fp32 here.", RuntimeWarning, stacklevel=4)
    return {"device_type": "CPU", "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": precision}})}


def registry_backend(version: "ModelVersion | None") -> dict[str, Any]:
    """``record_backend`` of a registry version's record; ``{}`` for none. Warns for an ONNX copy
    exported before the export traced eager attention: it is correct but slower (see onnx_export)."""
    if version is None:
        return {}
    if version.record.get("backend") == "onnx" and version.record.get("onnx_attention") != ONNX_ATTENTION:
        source = version.record.get("optimized_from", "its source version")
        warnings.warn(f"{version.ref}'s ONNX file was exported with SDPA attention, whose export masks every "
                      "attention score in extra passes (int8 cross-encoder, 50 pairs at 128 tokens: 608 against "
                      f"464 ms p50). Re-run `unirank models optimize {source}` with the same options for a faster "
                      "copy, and promote it.", RuntimeWarning, stacklevel=2)
    return record_backend(version.record)


def record_backend(record: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the embedder and reranker classes take to load a record's model as recorded:
    ``{"backend", "onnx_file"}`` (plus ``onnx_provider`` and ``dtype`` when named) for ONNX, ``{"dtype"}``
    for a bf16 PyTorch copy, else ``{}``."""
    if record.get("backend", "torch") == "torch":
        return {"dtype": record["dtype"]} if record.get("dtype") else {}
    named = {key: record[key] for key in ("onnx_provider", "dtype") if record.get(key)}
    return {"backend": record["backend"], "onnx_file": record.get("onnx_file"), **named}
