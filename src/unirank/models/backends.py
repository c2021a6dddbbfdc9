"""Which inference backend a model runs on: PyTorch (default) or ONNX Runtime, chosen per registry version.

``unirank models optimize`` registers an ONNX version with ``backend: "onnx"`` and ``onnx_file`` in its
record; loading passes both to sentence-transformers, which runs the file with ONNX Runtime. With
``--dtype bfloat16`` it registers a PyTorch version with ``dtype: "bfloat16"`` instead, loaded in bf16.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirank.errors import ModelLoadError
from unirank.models.precision import torch_dtype_kwargs

if TYPE_CHECKING:
    from unirank.registry.store import ModelVersion

BACKENDS: tuple[str, ...] = ("torch", "onnx")


def backend_kwargs(path: str, backend: str, onnx_file: str | None, dtype: str | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """Keyword arguments for ``SentenceTransformer``/``CrossEncoder`` that select the backend.

    A missing ONNX file is refused here: sentence-transformers would otherwise quietly export a new
    fp32 model in its place, which is not the file the registry promised.
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"Unknown backend {backend!r} for {path}: use one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return torch_dtype_kwargs(path, dtype, device) if dtype else {}
    if dtype:
        raise ModelLoadError(f"{path} names dtype {dtype!r} for ONNX Runtime, which runs its file's own types; "
                             "a bf16 copy runs on PyTorch (backend torch).")
    if not onnx_file:
        raise ModelLoadError(f"{path} is registered with backend onnx but names no onnx_file; "
                             "re-run `unirank models optimize` on its source version.")
    if not (Path(path) / onnx_file).is_file():
        raise ModelLoadError(f"{Path(path) / onnx_file} is missing; re-run `unirank models optimize` "
                             "on the source version to export it again.")
    try:
        import onnxruntime  # noqa: F401
        import optimum.onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"{path} runs on ONNX Runtime, which is not installed: "
                             "pip install 'unirank[onnx]'.") from exc
    return {"backend": "onnx", "model_kwargs": {"file_name": onnx_file}}


def registry_backend(version: "ModelVersion | None") -> dict[str, Any]:
    """``record_backend`` of a registry version's record; ``{}`` for none."""
    return record_backend(version.record if version is not None else {})


def record_backend(record: dict[str, Any]) -> dict[str, Any]:
    """``{"backend", "onnx_file"}`` for a record that names ONNX, ``{"dtype"}`` for a bf16 one, else ``{}``:
    the keyword arguments the embedder and reranker classes take to load it as recorded."""
    if record.get("backend", "torch") == "torch":
        return {"dtype": record["dtype"]} if record.get("dtype") else {}
    return {"backend": record["backend"], "onnx_file": record.get("onnx_file")}
