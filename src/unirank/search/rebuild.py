"""Re-embedding an index's chunks with another embedder (no re-parsing of the documents)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Iterator

from unirank.errors import ChunksTooLongError, UnirankError
from unirank.models.embedder import Embedder
from unirank.search.backend import SearchBackend, derived_index_name
from unirank.search.types import Chunk, IndexedSource, ModelSignature, SourceState

if TYPE_CHECKING:
    from unirank.settings import Settings

Stage = Callable[[str], None]


def refuse_chunks_over_window(backend: SearchBackend, index: str, embedder: Embedder,
                              batch_chunks: int = 512) -> None:
    """Chunks are cut for the window of the model that ingested them: a model with a smaller window (or
    a tokenizer that reads the same text as more tokens) would embed them cut, without a word. One pass
    of the tokenizer, far cheaper than the embedding it saves."""
    window, tokenizer = embedder.max_seq_length, embedder.tokenizer
    too_long = total = longest = 0
    for batch in backend.iter_chunks(index, batch_size=batch_chunks):
        encoded = tokenizer([c.embedding_input() for c in batch], add_special_tokens=True, truncation=False,
                            return_attention_mask=False, return_token_type_ids=False, verbose=False)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        total += len(lengths)
        too_long += sum(n > window for n in lengths)
        longest = max([longest, *lengths])
    if too_long:
        raise ChunksTooLongError(index, str(embedder.signature), window, too_long, total, longest)


def reembedded_sources(backend: SearchBackend, index: str, embedder: Embedder, batch_chunks: int = 512,
                       sources: Collection[str] | None = None) -> Iterator[list[IndexedSource]]:
    """The index's sources (or these ``sources``), each with all its chunks and new vectors, in write-sized
    batches. Only one batch is held at a time: ``iter_chunks`` yields a source's chunks together."""
    states = backend.source_states(index)
    pending: list[tuple[SourceState, list[Chunk]]] = []
    pending_uris: set[str] = set()
    count = 0
    chunks_in_order = (chunk for batch in backend.iter_chunks(index, batch_size=batch_chunks, sources=sources)
                       for chunk in batch)
    for uri, group in itertools.groupby(chunks_in_order, key=lambda c: c.source_uri):
        if uri in pending_uris:
            # Ingested again while being read: its new chunks come later and replace the old ones, in a
            # batch of their own (one write holds a source once). rebuild's catch-up settles its state.
            yield _embed(pending, embedder)
            pending, pending_uris, count = [], set(), 0
        chunks = list(group)  # as stored: a JSONL source holds several documents, each from ordinal 0
        pending.append((states.get(uri) or SourceState(uri=uri, content_hash="", size=0), chunks))
        pending_uris.add(uri)
        count += len(chunks)
        if count >= batch_chunks:
            yield _embed(pending, embedder)
            pending, pending_uris, count = [], set(), 0
    if pending:
        yield _embed(pending, embedder)


def _embed(pending: list[tuple[SourceState, list[Chunk]]], embedder: Embedder) -> list[IndexedSource]:
    vectors = embedder.embed_documents([c.embedding_input() for _, chunks in pending for c in chunks])
    out, offset = [], 0
    for state, chunks in pending:
        out.append(IndexedSource(state=state, chunks=chunks, vectors=vectors[offset : offset + len(chunks)]))
        offset += len(chunks)
    return out


def reembedded_index(backend: SearchBackend, index: str, embedder: Embedder, stage: Stage | None = None) -> str:
    """A sibling index ``INDEX--MODEL-VERSION`` with ``embedder``'s vectors, made once and reused while
    ``index``'s content is as it was copied. Only a copy of ``index`` is ever deleted to be made again."""
    sig = embedder.signature
    if backend.model(index) == sig:
        return index
    target = derived_index_name(index, f"{sig.name}-{sig.version}")
    if backend.exists(target):
        if _holds_current_copy(backend, index, target, sig):
            return target
        _refuse_replacing_other_index(backend, index, target, sig)
        backend.delete_index(target)
    refuse_chunks_over_window(backend, index, embedder)
    (stage or (lambda _: None))(f"re-embedding {index} with {sig} into {target}")
    backend.create_index(target, sig, copy_of=index)
    for batch in reembedded_sources(backend, index, embedder):
        backend.index(target, batch, model=sig)
    backend.flush(target)
    return target


def _holds_current_copy(backend: SearchBackend, index: str, target: str, sig: ModelSignature) -> bool:
    """Whether ``target`` has ``sig``'s vectors of every source of ``index`` as it is now. A copy holds the
    source states it was made from (read before its chunks): the content hash and recipe that ingest itself
    skips unchanged files by. Its ``updated_at``, to the second, missed an edit made in the same second."""
    if backend.model(target) != sig:
        return False
    return _contents(backend.source_states(target)) == _contents(backend.source_states(index))


def _contents(states: dict[str, SourceState]) -> dict[str, tuple[str, str]]:
    """What a source's chunks are made from; a touched file's new size and time change none of them."""
    return {uri: (state.content_hash, state.recipe) for uri, state in states.items()}


def _refuse_replacing_other_index(backend: SearchBackend, index: str, target: str, sig: ModelSignature) -> None:
    """The name a copy takes may be the user's own index (``docs--small-embed-1``, made by ingest): it is
    not deleted to make the copy."""
    if target == index or backend.info(target).copy_of != index:
        raise UnirankError(
            f"Index {target!r} exists and is not a copy of {index!r}, so it is not replaced by one; a copy of "
            f"{index!r} re-embedded with {sig} needs that name. Ingest its documents under another name and "
            f"delete it (`unirank index delete {target}`), or delete it if an earlier unirank made it as this copy.")


def configured_model_refused(settings: Settings, rebuilt_with: str, index_model: ModelSignature) -> bool:
    """Whether ``embedder.model`` is set to a model other than ``index_model``, which `index rebuild --model
    rebuilt_with` just gave the index: every search and ingest of it with that setting is then refused.
    Told without loading the model: by name, by the registry (an alias, an optimized copy), by folder."""
    from unirank.models.loading import BASE_ALIAS, BASE_SIGNATURE_REF, _same_vectors, registry_version

    configured = settings.embedder.model
    if configured is None or configured in (rebuilt_with, str(index_model)):
        return False
    try:
        registered = registry_version(configured, settings.models_dir)
        if registered is None and configured != BASE_ALIAS:  # a folder (or a hub id): the one rebuilt with?
            return Path(configured).expanduser().resolve() != Path(rebuilt_with).expanduser().resolve()
        ref = BASE_SIGNATURE_REF if registered is None else registered.ref
        same = _same_vectors(configured, registered, settings.models_dir)
    except (UnirankError, OSError):  # a setting that does not load here is refused all the same
        return True
    return str(index_model) != ref and str(index_model) not in same
