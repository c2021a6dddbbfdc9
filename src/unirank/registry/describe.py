"""Read what a model folder is (dims, max sequence length, base model) to record it on registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unirank.errors import ModelLoadError


def describe_model_folder(path: Path, role: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a folder: give --path the folder a model was saved to.")
    config_path = path / "config.json"
    if not config_path.exists():
        raise ModelLoadError(f"{path} has no config.json: it is not a saved transformers/sentence-transformers model.")
    config = json.loads(config_path.read_text())
    info: dict[str, Any] = {"base_model": config.get("_name_or_path") or config.get("model_type", "unknown"),
                            "architecture": (config.get("architectures") or ["?"])[0]}
    from unirank.models.loading import is_cross_encoder, quiet_transformers

    quiet_transformers()

    cross = is_cross_encoder(str(path))
    if role == "embedder" and cross:
        raise ModelLoadError(
            f"{path} is a cross-encoder (it scores query-passage pairs), not an embedder: register it with "
            "--role reranker.")
    if not cross:  # an embedder, or a bi-encoder reranker (it ranks by cosine, as `base` does)
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"{path} does not load as a sentence-transformers embedder: {exc}") from exc
        info["dims"] = int(model.get_embedding_dimension())
        info["max_seq_length"] = int(model.max_seq_length)
        if role == "reranker":
            info["scoring"] = "bi-encoder cosine"
    else:
        from sentence_transformers import CrossEncoder

        try:
            model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"{path} does not load as a sentence-transformers cross-encoder: {exc}") from exc
        info["max_seq_length"] = int(model.max_seq_length or config.get("max_position_embeddings", 512))
        info["num_labels"] = int(model.num_labels)
    return info
