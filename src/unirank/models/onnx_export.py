"""Export a model folder to ONNX (fp32, and dynamically quantized int8) with sentence-transformers' helpers.

sentence-transformers exports through Optimum (``optimum.onnxruntime``) and quantizes with
``export_dynamic_quantized_onnx_model``: int8 weights, activations quantized on the fly, no calibration
data. The int8 configuration is chosen for the CPU it is made on (arm64, avx2, avx512, avx512_vnni),
because a file quantized for VNNI can saturate on a CPU without it.

Only the MatMul weights are quantized. The token-embedding table (a Gather) stays fp32: quantizing it
too (Optimum's default) cost all-MiniLM-L6-v2 0.0053 nDCG@10 on CISI (0.4233 -> 0.4181, past the 0.005
allowed) against 0.4264 without it, in a 56 MiB file instead of 22 MiB. The MatMuls of two activations
(attention's query x key and weights x value) stay fp32 too: Optimum would quantize them on every call
(ONNX Runtime's own ``quantize_dynamic`` does not), which cost the int8 cross-encoder time (50 pairs at
128 tokens: 461-483 against 515-559 ms p50, side by side) and precision (the embedder's mean cosine to
fp32 0.9944 against 0.9924, 70 against 63 docs/s; its CISI nDCG@10, 0.4183 against 0.4254, moves with
which of the near-tied documents win: the top 10 of either file agree with fp32's on 88 %).

The model is traced with transformers' eager attention, not SDPA. SDPA's export carries an attention
mask of ``Where``/``IsNaN`` nodes over every (query, key) pair that ONNX Runtime runs as separate passes:
a quarter of the int8 cross-encoder's time at 128 tokens. Traced eager, the same int8 file reranked 50
pairs of CISI text at 128 tokens in 464 against 608 ms p50 (fp32: 918 against 1,068 ms, outputs equal
to 4e-5), side by side in one process. PyTorch itself stays on SDPA, its fastest there.

There is no graph-fusion pass before quantizing: ONNX Runtime's transformer optimizer (model_type
``bert``) fuses the eager export's attention into ``Attention``/``QAttention`` nodes, but those ran slower
than the unfused graph (int8, 128 tokens: 478 against 420 ms; fp32: 964 against 843 ms), and fusing only
its layer norms and Gelu gained nothing (528 against 528 ms).

Static quantization (ONNX Runtime's ``quantize_static``, QDQ, per-channel, activations calibrated on 160
CISI pairs) is not offered: at 128 tokens it took 893 ms where the dynamic file took 397 (MatMuls only;
all operators, 931-1,392 ms), and its scores correlated 0.74 with fp32's against 0.99 (2026-12-07, a
2-core AMD EPYC without AMX, side by side in one process). The dynamic file on the OpenVINO provider was
slower too, and off by up to 0.47.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import platform
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from unirank.errors import ConfigurationError, ModelLoadError, UnirankError
from unirank.registry.store import MARKER_FILE

#: Where sentence-transformers puts the fp32 export, relative to the model folder.
FP32_FILE = "onnx/model.onnx"
#: Operators whose weights int8 quantization converts (see the module docstring).
QUANTIZED_OPERATORS = ["MatMul"]
QUANTIZATIONS: tuple[str, ...] = ("int8",)
#: The shortest token window an export may be given: a query, a passage's start and the special tokens.
MIN_SEQ_LENGTH = 32


@dataclass(frozen=True)
class OnnxExport:
    folder: Path
    fp32_file: str
    #: ``onnx/model_qint8_<arch>.onnx`` when quantized.
    int8_file: str | None = None
    #: The int8 configuration used (arm64, avx2, avx512, avx512_vnni).
    arch: str | None = None

    @property
    def served_file(self) -> str:
        """The file a registry version built from this export runs: int8 when there is one."""
        return self.int8_file or self.fp32_file


def quantization_arch() -> str:
    """The best dynamic-quantization configuration this CPU runs correctly."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = _cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def _cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports; torch's capability string where there is no /proc."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    import torch

    capability = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", "default"...
    return {"avx512f"} if capability.startswith("avx512") else {capability}


@contextlib.contextmanager
def _transformers5_export_compat() -> Iterator[None]:
    """Let Optimum's ONNX exporter trace transformers 5 models.

    optimum-onnx's export patcher swaps in its own attention-mask builders written for the transformers
    4.x signature (``cache_position``); transformers 5 calls them with ``q_length``/``q_offset`` and the
    export fails with "missing ... 'cache_position'". Those builders only existed to avoid ``vmap``,
    which transformers 5's own builders no longer use by default, so during the export the patcher is
    given transformers' own functions. Nothing changes where the signatures still match.
    """
    from optimum.exporters.onnx import model_patcher
    from transformers import masking_utils

    theirs = inspect.signature(model_patcher.sdpa_mask_without_vmap).parameters
    ours = inspect.signature(masking_utils.sdpa_mask).parameters
    if "cache_position" not in theirs or "cache_position" in ours:
        yield
        return
    saved = model_patcher.sdpa_mask_without_vmap, model_patcher.eager_mask_without_vmap
    model_patcher.sdpa_mask_without_vmap = masking_utils.sdpa_mask
    model_patcher.eager_mask_without_vmap = masking_utils.eager_mask
    try:
        yield
    finally:
        model_patcher.sdpa_mask_without_vmap, model_patcher.eager_mask_without_vmap = saved


def weight_matmuls(onnx_file: Path) -> list[str]:
    """The MatMul nodes that multiply by a stored weight (the ones worth quantizing; see the docstring)."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}
    weights |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


#: Both spellings of the config key that chooses transformers' attention implementation.
_ATTENTION_KEYS = ("attn_implementation", "_attn_implementation")


@contextlib.contextmanager
def _eager_attention(folder: Path) -> Iterator[None]:
    """Have the exporter trace ``folder``'s transformer with eager attention (see the module docstring).

    Optimum's export takes no model arguments from sentence-transformers, so the choice goes in the
    transformer's ``config.json`` while it runs; the key is taken out again, so the copy loads on PyTorch
    with the same attention as its source.
    """
    config_file = folder / _transformer_subfolder(folder) / "config.json"
    if not config_file.is_file():
        yield
        return
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "attn_implementation": "eager"}, indent=2))
    try:
        yield
    finally:
        config = json.loads(config_file.read_text())  # saving the copy rewrites it
        for key in _ATTENTION_KEYS:
            config.pop(key, None)
        config_file.write_text(json.dumps(config, indent=2) + "\n")


def _transformer_subfolder(folder: Path) -> str:
    """Where a sentence-transformers folder keeps its transformer (``""``: the folder itself)."""
    modules = folder / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith(".Transformer"):
                return module.get("path", "")
    return ""


def refuse_longer_window(source: object, current: int, max_seq_length: int) -> None:
    """A window longer than the one ``source`` was trained with would read tokens it never learned."""
    if max_seq_length > current:
        raise ConfigurationError(f"{source} reads at most {current} tokens; a window of {max_seq_length} "
                                 f"would go past what it was trained on. Use a max_seq_length of at most {current}.")


def check_quantization(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigurationError(f"Unknown quantization {quantize!r}: use one of {', '.join(QUANTIZATIONS)}.")


def refuse_short_window(max_seq_length: int | None) -> None:
    """A window too short for a query and the start of a passage would make every copy useless."""
    if max_seq_length is not None and max_seq_length < MIN_SEQ_LENGTH:
        raise ConfigurationError(f"max_seq_length {max_seq_length} is too short to hold a query and a passage; "
                                 f"use at least {MIN_SEQ_LENGTH}.")


def shorten_window(model, max_seq_length: int, source: Path) -> None:
    """Cut a loaded model's token window; a longer one than it was trained with is refused."""
    refuse_longer_window(source, int(model.max_seq_length), max_seq_length)
    model.max_seq_length = max_seq_length


def export_onnx(source: Path, dest: Path, role: str, *, quantize: str | None = None,
                max_seq_length: int | None = None) -> OnnxExport:
    """Copy the model folder ``source`` to ``dest`` and add ``onnx/model.onnx`` (+ the int8 file).

    ``role`` is ``embedder`` or ``reranker``; a reranker is exported as what its files are, a cross-encoder
    or a bi-encoder that reranks by cosine (``describe_model_folder``'s ``scoring``).
    ``max_seq_length`` shortens the token window the copy reads (saved in its tokenizer config, so
    every loader honours it): a cross-encoder's cost grows with it, and 128 tokens cost a third of 256.
    """
    check_quantization(quantize)
    refuse_short_window(max_seq_length)
    try:
        from sentence_transformers import CrossEncoder, SentenceTransformer, export_dynamic_quantized_onnx_model
        import optimum.onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("ONNX export needs Optimum and ONNX Runtime: pip install 'unirank[onnx]'.") from exc

    from unirank.models.loading import is_cross_encoder, quiet_transformers

    dest = Path(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("onnx", MARKER_FILE))
    # From the files, not the role: a bi-encoder registered as a reranker, loaded as a CrossEncoder, got a
    # newly initialised (random) classifier head, and its copy scored nothing like its source.
    cross = role != "embedder" and is_cross_encoder(str(source))
    model_class = CrossEncoder if cross else SentenceTransformer
    quiet_transformers()
    # "Saving the exported ONNX model is heavily recommended": it is saved right below.
    save_hint = logging.getLogger("sentence_transformers.backend.utils")
    level = save_hint.level
    try:
        save_hint.setLevel(logging.ERROR)
        with _eager_attention(dest):
            with _transformers5_export_compat(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.onnx tracer notes about Python ints in the graph
                model = model_class(str(dest), backend="onnx", device="cpu", local_files_only=True,
                                    model_kwargs={"export": True})
            if max_seq_length is not None:
                shorten_window(model, max_seq_length, source)
            model.save_pretrained(str(dest))
    except UnirankError:
        raise
    except Exception as exc:  # Optimum/torch.onnx raise many kinds
        raise ModelLoadError(f"Exporting {source} to ONNX failed: {exc}") from exc
    finally:
        save_hint.setLevel(level)
    if not (dest / FP32_FILE).is_file():
        raise ModelLoadError(f"Exporting {source} to ONNX wrote no {FP32_FILE}.")
    if quantize is None:
        return OnnxExport(folder=dest, fp32_file=FP32_FILE)
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    arch = quantization_arch()
    config = getattr(AutoQuantizationConfig, arch)(is_static=False, operators_to_quantize=QUANTIZED_OPERATORS,
                                                   nodes_to_quantize=weight_matmuls(dest / FP32_FILE))
    export_dynamic_quantized_onnx_model(model, config, str(dest), file_suffix=f"qint8_{arch}")
    int8_file = f"onnx/model_qint8_{arch}.onnx"
    if not (dest / int8_file).is_file():
        raise ModelLoadError(f"Quantizing {source} for {arch} wrote no {int8_file}.")
    return OnnxExport(folder=dest, fp32_file=FP32_FILE, int8_file=int8_file, arch=arch)
