"""Read what a model folder is (dims, max sequence length, base model) to record it on registration, and
the record an exported folder carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unirank.errors import ModelLoadError
from unirank.registry.files import MARKER_FILE, files_digest, read_marker
from unirank.registry.store import REGISTRY_LINKS


def describe_model_folder(path: Path, role: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a folder: give --path the folder a model was saved to.")
    config_path = path / "config.json"
    if not config_path.exists():
        raise ModelLoadError(f"{path} has no config.json: it is not a saved transformers/sentence-transformers model.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ModelLoadError(f"{config_path} is not valid JSON ({exc}): it is not a saved transformers/"
                             "sentence-transformers model, or the file is damaged; save the model again "
                             "(model.save_pretrained / SentenceTransformer.save) and register that folder.") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path} holds a JSON {type(config).__name__}, not the object of a saved "
                             "transformers model's configuration: save the model again and register that folder.")
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
        _refuse_a_missing_vocabulary(path, model.tokenizer)
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
        _refuse_a_missing_vocabulary(path, model.tokenizer)
        info["max_seq_length"] = int(model.max_seq_length or config.get("max_position_embeddings", 512))
        info["num_labels"] = int(model.num_labels)
    return info


#: Words any real vocabulary holds, to tell a tokenizer that has one.
_COMMON_WORDS = "the quick brown fox jumps over the lazy dog"


def _refuse_a_missing_vocabulary(path: Path, tokenizer: Any) -> None:
    """A folder without tokenizer.json and vocab.txt still loads: transformers builds a tokenizer of the
    special tokens alone, which reads every word as unknown, so every text got nearly the same vector."""
    ids = tokenizer(_COMMON_WORDS, add_special_tokens=False)["input_ids"]
    if not ids or all(i == tokenizer.unk_token_id for i in ids):
        raise ModelLoadError(
            f"{path}: its tokenizer reads every word as unknown ({tokenizer.unk_token}): the vocabulary "
            "(tokenizer.json or vocab.txt) is missing. Copy the whole folder the model was saved to and register "
            "that folder.")


#: What ``describe_model_folder`` reads from the files themselves: it wins over an exported record's.
MEASURED = ("dims", "max_seq_length", "architecture", "scoring", "num_labels")


def exported_record(path: Path, role: str) -> tuple[dict[str, Any], list[str]]:
    """The record a folder made by ``unirank models export`` carries (its marker file), to register it
    with, and warnings on what could not be kept.

    The version's record comes back whole (base model, data hash, hyper-parameters, training-query
    fingerprints, metrics with the eval sets they were measured on...), less what names other versions
    of the registry it came from (``REGISTRY_LINKS``): those, and where it was exported from, go under
    ``lineage``. Files changed since the export keep only the training queries (the model was made from
    one trained on them). A folder without a marker, or with one from before exports carried records,
    gives nothing to restore."""
    try:
        marker = read_marker(path)
    except (OSError, ValueError) as exc:
        return {}, [f"{Path(path) / MARKER_FILE} is not readable ({exc}): registered without the record it may "
                    "carry."]
    if not marker or not marker.get("name"):
        return {}, []
    source = f"{marker['name']}@{marker.get('version')}"
    record = marker.get("record")
    if not isinstance(record, dict):
        return {"lineage": {"exported_from": source}}, [
            f"{path} is marked as {source} but carries no record (an export made before exports carried one, "
            "or a registry folder copied as it is): what it was trained on (training "
            "queries, data hash, hyper-parameters) and its metrics are unknown here, so evaluation cannot refuse "
            f"its training queries. Where {source}'s registry is at hand, export it again and register that copy."]
    lineage: dict[str, Any] = {"exported_from": source, "created_at": marker.get("created_at"),
                               "exported_at": marker.get("exported_at")}
    lineage.update({key: record[key] for key in REGISTRY_LINKS if key in record})
    if record.get("lineage"):
        lineage["lineage"] = record["lineage"]  # where that version came from in turn
    restored = {k: v for k, v in record.items() if k not in (*REGISTRY_LINKS, "lineage", "files_sha256", "files")}
    warnings = []
    expected = marker.get("files_sha256")
    if expected and files_digest(Path(path)) != expected:
        lineage["files_changed_since_export"] = True
        kept = {k: restored[k] for k in ("training_queries",) if k in restored}
        warnings.append(f"{path}'s files changed since {source} was exported: its training queries are kept "
                        "(the model was made from one trained on them), not its metrics, base model, data hash "
                        "or hyper-parameters, which describe the exported files.")
        return {**kept, "lineage": lineage}, warnings
    if marker.get("role") not in (None, role):
        dropped = [k for k in ("metrics", "evaluations") if restored.pop(k, None) is not None]
        if dropped:
            warnings.append(f"{source} was registered as a {marker['role']}: its metrics, measured as one, are not "
                            f"kept for this {role}.")
    return {**restored, "lineage": lineage}, warnings


def registration_record(path: Path, role: str) -> tuple[dict[str, Any], list[str]]:
    """``describe_model_folder``, with the record of an exported folder restored over it (what the files
    say of themselves, ``MEASURED``, still comes from them); and warnings."""
    described = describe_model_folder(path, role)
    restored, warnings = exported_record(path, role)
    return {**described, **restored, **{k: described[k] for k in MEASURED if k in described}}, warnings
