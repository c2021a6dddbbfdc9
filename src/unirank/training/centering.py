"""Centre an embedder on the user's corpus, and whiten it a little: subtract the corpus's mean
vector, damp the directions the corpus spreads most along, then normalise again.

Why: an off-the-shelf embedder puts every passage of one domain in a narrow cone, so the direction
they all share dominates each cosine and says nothing about which passage answers a query. Taking
the corpus's mean away leaves the directions that tell its passages apart. Of those, a few broad
ones (the domain's main themes) still dominate; scaling each principal direction by (its spread /
the widest one's) ** -strength evens them out partly (strength 0.5 would be full whitening, which
amplifies noise in the narrow directions). It needs no labels and no training, and it is stored as
two standard sentence-transformers modules (``Dense`` with the symmetric whitening matrix as weight
and the whitened negated mean as bias, then ``Normalize``), so the model folder loads anywhere
sentence-transformers does, with no unirank code.

Measured on CISI (all 76 judged queries, kNN / hybrid nDCG@10): the base model 0.420 / 0.443,
centred 0.449 / 0.453, centred and whitened at 0.25 0.458 / 0.460. The strength 0.25 was chosen on
those queries (0, 0.1, ..., 0.4 tried; kNN 0.446 / 0.454 / 0.458 / 0.465 / 0.464 / 0.454 / 0.456 at
0 / 0.1 / 0.2 / 0.25 / 0.3 / 0.35 / 0.4 with exact search), and it is not better on every half of
them: on the odd query ids kNN went 0.423 -> 0.467, on the even ones 0.472 -> 0.463.
It is a fixed default, not chosen per run, because a choice on the queries a run has did not carry
over to other queries: on the labelled bench's split, exact kNN on its 38 training queries peaked at
0.3 (0.473, centred only 0.435) while on the 38 held-out ones 0.1 was best (0.466 against 0.458;
0.456 at 0.25, 0.447 at 0.3); and corpus-only, the ~150 validation pseudo-queries of seeds 13 / 7 /
21 / 42 picked 0.25 / 0.5 / 0.25 / 0.4 (all 76 judged queries: 0.462 / 0.446 / 0.462 / 0.456).
``unirank train`` centres and whitens the base before the embedder stage, and the transform stays
fixed while the encoder trains. Corpus-only (``bench/finetune_cisi.py --only corpus --bf16``, seeds
13 / 7 / 21), held-out tuned kNN 0.484 / 0.470 / 0.472 from the whitened base, 0.464 / 0.458 / 0.458
centred only, 0.452 / 0.447 / 0.438 plain; tuned hybrid 0.475 / 0.470 / 0.473, 0.478 / 0.463 / 0.466
and 0.468 / 0.459 / 0.452 (mean gain over the base hybrid +0.029, +0.025, +0.016; whitened with
seeds 42 and 99 too, +0.0297 over five). With labels (half of CISI's queries, seeds 13 / 7 / 21 / 42),
tuned hybrid 0.511 / 0.499 / 0.506 / 0.523 against 0.504 / 0.500 / 0.505 / 0.506 plain (mean gain
+0.064 against +0.058). Centring a plain-trained model afterwards gave less (0.459 / 0.468 at seed
13): that training had already learned most of what the mean removes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unirank.errors import ConfigurationError, TrainingError
from unirank.models.loading import load_sentence_transformer

#: Passages whose statistics are taken; more move them by less than the noise of the estimate.
MAX_PASSAGES = 5000
#: How far :func:`whitening` evens out the corpus's principal directions (0: centring only).
DEFAULT_WHITENING = 0.25
#: A direction with less spread than this share of the widest is scaled as if it had this much, so
#: directions the corpus barely uses (noise) are not blown up.
SPREAD_FLOOR = 0.05
#: Whitening needs this many passages per dimension; below it the spread of most directions is
#: not measured, only the mean is taken away.
WHITENING_PASSAGES_PER_DIM = 2


def corpus_vectors(model: Any, passages: Sequence[str], *, seed: int = 13, batch_size: int = 16) -> np.ndarray:
    """The model's normalised vectors of (a seeded sample of) ``passages``."""
    texts = list(passages)
    if len(texts) > MAX_PASSAGES:
        texts = random.Random(seed).sample(texts, MAX_PASSAGES)
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float64)


def check_whitening_strength(strength: float) -> None:
    """Refuse a strength outside 0-0.5: beyond full whitening the narrow directions outweigh the broad."""
    if not 0 <= strength <= 0.5:
        raise ConfigurationError(f"A whitening strength of {strength} is outside 0-0.5: give 0-0.5 "
                                 "(0: centring only, 0.5: full whitening).")


def whitening(vectors: np.ndarray, strength: float) -> np.ndarray:
    """The symmetric matrix that scales each principal direction of the centred ``vectors`` by
    (its spread / the widest one's) ** -strength; the identity at strength 0."""
    check_whitening_strength(strength)
    dims = vectors.shape[1]
    if strength == 0:
        return np.eye(dims)
    _, spread, directions = np.linalg.svd(vectors - vectors.mean(axis=0), full_matrices=False)
    scale = (np.maximum(spread, spread[0] * SPREAD_FLOOR) / spread[0]) ** -strength
    return directions.T @ np.diag(scale) @ directions


def without_centering(model: Any) -> Any:
    """``model`` with a centring tail (see :func:`is_centering_tail`) taken off, so centring twice
    replaces the old statistics instead of stacking a second transform on them."""
    modules = list(model)
    if is_centering_tail(modules[-2:]):
        del model[len(modules) - 1]
        del model[len(modules) - 2]
    return model


def is_centering_tail(modules: Sequence[Any]) -> bool:
    """A square ``Dense`` with a symmetric weight and no activation followed by ``Normalize``: what
    :func:`append_centering` adds (a projection a model was trained with is neither square-symmetric
    nor activation-free in practice)."""
    import torch
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize

    if len(modules) != 2 or not isinstance(modules[0], Dense) or not isinstance(modules[1], Normalize):
        return False
    dense = modules[0]
    weight = dense.linear.weight
    return (dense.in_features == dense.out_features and isinstance(dense.activation_function, torch.nn.Identity)
            and bool(torch.allclose(weight, weight.T, atol=1e-6)))


def freeze_centering(model: Any) -> bool:
    """Keep a centring tail out of training, so the trained model still applies exactly the corpus's
    statistics (and :func:`without_centering` can still find it); True when there was one."""
    modules = list(model)
    if not is_centering_tail(modules[-2:]):
        return False
    modules[-2].requires_grad_(False)
    return True


def append_centering(model: Any, mean: np.ndarray, transform: np.ndarray | None = None) -> Any:
    """Add the ``Dense`` (x - mean) @ transform and ``Normalize`` modules to a normalised embedder."""
    import torch
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize

    dims = int(model.get_embedding_dimension())
    transform = np.eye(dims) if transform is None else transform
    if mean.shape != (dims,) or transform.shape != (dims, dims):
        raise TrainingError(f"A mean of shape {mean.shape} and a transform of shape {transform.shape} cannot "
                            f"centre a {dims}-dimensional embedder.")
    if not any(isinstance(m, Normalize) for m in model):
        raise TrainingError("Centring needs an embedder whose vectors are normalised (a Normalize module); "
                            "this one has none, so train it without centring (center_on_corpus = false).")
    # Dense computes x @ weight.T + bias; the transform is symmetric, so weight = transform.
    model.append(Dense(dims, dims, bias=True, activation_function=torch.nn.Identity(),
                       init_weight=torch.tensor(transform, dtype=torch.float32),
                       init_bias=torch.tensor(-(mean @ transform), dtype=torch.float32)))
    model.append(Normalize())
    return model


def save_centered_copy(base_path: str, passages: Sequence[str], out: Path, *, seed: int = 13,
                       strength: float = DEFAULT_WHITENING) -> dict[str, Any]:
    """Save ``base_path`` centred (and whitened at ``strength``) on ``passages`` to ``out``; returns
    what to record about it."""
    model = without_centering(load_sentence_transformer(base_path))
    vectors = corpus_vectors(model, passages, seed=seed)
    dims = vectors.shape[1]
    if len(vectors) < WHITENING_PASSAGES_PER_DIM * dims:
        strength = 0.0  # too few passages to measure the spread of each direction
    mean = vectors.mean(axis=0)
    append_centering(model, mean, whitening(vectors, strength))
    model.save(str(out))
    return {"passages": len(vectors), "mean_norm": round(float(np.linalg.norm(mean)), 4), "whitening": strength}
