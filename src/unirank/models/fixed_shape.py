"""Full-window batches on OpenVINO run through a session compiled for one fixed input shape.

OpenVINO compiles a model for dynamic shapes unless told the shape, and its fixed-shape code is
faster: the cross-encoder scored pairs of CISI text at 256 tokens in 5.5 ms a pair on a session
compiled for ``[4, 256]`` against 6.8-6.9 ms with dynamic shapes (bf16, 2 cores, side by side);
4 rows a call cost the same per pair as 16 or 32. Fixing only the window (batch dynamic) kept
little of it (6.3 ms), so each call gets exactly ``FIXED_ROWS`` rows.

Batches at the full window are the common case, not a corner: ingestion cuts chunks to the model's
window, so reranked passages fill it. A batch that reaches ``PAD_FROM`` of the window is padded to
it (masked positions change no real token's output); a shorter one runs on the dynamic session.
The second session costs memory (~150 MB for the MiniLM cross-encoder) and ~0.3 s at load.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unirank.models.backends import ONNX_PROVIDERS

#: Rows per call of the fixed-shape session; the last call of a batch is padded up to it.
FIXED_ROWS = 4
#: A batch at least this share of the window long is padded to the window. Break-even, measured as
#: above: the fixed [4, 256] session took 5.4-5.5 ms a pair, dynamic shapes 5.1 at 208 tokens, 5.6 at
#: 224 and 6.2-6.3 at 240.
PAD_FROM = 0.875
#: The inputs of a BERT-style export, padded with these values.
_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}


class FixedShapeSession:
    """Stands in for an ONNX Runtime session: a batch that fills the window runs in fixed-shape
    calls, any other on the dynamic session it wraps (which also answers everything else)."""

    def __init__(self, dynamic: Any, fixed: Any, *, window: int, pad_token_id: int) -> None:
        self._dynamic = dynamic
        self._fixed = fixed
        self.window = window
        self._pad = {name: (pad_token_id if value is None else value) for name, value in _PAD_VALUES.items()}
        sequence_axis = dynamic.get_inputs()[0].shape[1]
        #: Outputs with a sequence axis (token embeddings), cut back to the batch's own length.
        self._per_token = [len(o.shape) > 1 and o.shape[1] == sequence_axis for o in dynamic.get_outputs()]
        self.fixed_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dynamic, name)

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray],
            run_options: Any = None) -> list[np.ndarray]:
        rows, length = next(iter(feed.values())).shape
        if output_names is not None or length < PAD_FROM * self.window or length > self.window:
            return self._dynamic.run(output_names, feed, run_options)
        total = math.ceil(rows / FIXED_ROWS) * FIXED_ROWS
        padded = {name: self._padded(name, array, total) for name, array in feed.items()}
        parts = []
        for start in range(0, total, FIXED_ROWS):
            parts.append(self._fixed.run(None, {k: v[start:start + FIXED_ROWS] for k, v in padded.items()},
                                         run_options))
            self.fixed_calls += 1
        outputs = [np.concatenate([part[i] for part in parts])[:rows] for i in range(len(parts[0]))]
        return [out[:, :length] if per_token else out for out, per_token in zip(outputs, self._per_token)]

    def _padded(self, name: str, array: np.ndarray, rows: int) -> np.ndarray:
        out = np.full((rows, self.window), self._pad.get(name, 0), dtype=array.dtype)
        out[: array.shape[0], : array.shape[1]] = array
        if name == "attention_mask":
            out[array.shape[0]:, 0] = 1  # padding rows attend to one token: no fully masked softmax
        return out


def use_fixed_shape_session(model: Any, path: str, loaded_with: dict[str, Any], *,
                            enabled: bool = True) -> FixedShapeSession | None:
    """Give a sentence-transformers model loaded on ONNX Runtime's OpenVINO provider a fixed-shape
    session for full-window batches, with the file and provider options it was loaded with
    (``loaded_with``: what ``backend_kwargs`` gave). None, and nothing changed, when not ``enabled``,
    for any other backend or provider, or inputs that are not a BERT-style export's."""
    model_kwargs = loaded_with.get("model_kwargs", {})
    on_openvino = loaded_with.get("backend") == "onnx" and model_kwargs.get("provider") == ONNX_PROVIDERS["openvino"]
    if not enabled or not on_openvino:
        return None
    import onnxruntime

    ort_model = getattr(model[0], "auto_model", None)
    dynamic = getattr(ort_model, "session", None)
    window = int(getattr(model, "max_seq_length", 0) or getattr(model, "max_length", 0) or 0)
    if dynamic is None or not window:
        return None
    names = [i.name for i in dynamic.get_inputs()]
    if not set(names) <= set(_PAD_VALUES) or "input_ids" not in names:
        return None
    shape = ",".join(f"{name}[{FIXED_ROWS},{window}]" for name in names)
    options = {**model_kwargs["provider_options"], "reshape_input": shape}
    try:
        fixed = onnxruntime.InferenceSession(str(Path(path) / model_kwargs["file_name"]),
                                             providers=[ONNX_PROVIDERS["openvino"]], provider_options=[options])
    except Exception as exc:  # an export OpenVINO cannot reshape: the dynamic session still serves it all
        warnings.warn(f"{path}: no fixed-shape OpenVINO session ({exc}); running on dynamic shapes only.",
                      RuntimeWarning, stacklevel=3)
        return None
    session = FixedShapeSession(dynamic, fixed, window=window, pad_token_id=int(model.tokenizer.pad_token_id or 0))
    ort_model.session = session
    return session
