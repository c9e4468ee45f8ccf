"""One seeded split of indices into named parts, optionally stratified by a label.

Every workflow splits through :func:`split_indices`: training / validation cells of a
reference, train / validation / test cells per perturbation, held-out perturbations (a split of
the list of targets), validation cells of pretraining and of scVI. The same seed gives the
same parts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cellsmith.errors import InputError


def split_indices(
    n_items: int,
    fractions: Mapping[str, float],
    *,
    seed: int,
    groups: np.ndarray | None = None,
    rest: str = "train",
    min_items: int = 1,
) -> dict[str, np.ndarray]:
    """Split ``range(n_items)`` into ``rest`` and the parts named in ``fractions``.

    Within every group (all items form one group when ``groups`` is None) the items are shuffled
    by one generator seeded with ``seed`` (groups in sorted order), then each named part takes
    ``round(fraction * size)`` items, in the order of ``fractions``, and ``rest`` the remainder.
    A group with more than ``len(fractions)`` items gives each named part at least one item and
    keeps at least one for ``rest``; a group of ``min_items`` or fewer items goes to ``rest`` whole.

    Parameters
    ----------
    n_items
        Number of items to split.
    fractions
        ``{part name: share}``; shares in [0, 1) summing to less than 1. A share of 0 gives an
        empty part.
    seed
        Seeds the shuffling.
    groups
        ``(n_items,)`` labels to stratify by (each group is split on its own).
    rest
        Name of the part that takes what the named parts leave.
    min_items
        Groups this small are not split.

    Returns
    -------
    dict
        ``{rest: indices, **{name: indices}}``, each sorted.
    """
    shares = dict(fractions)
    if any(not 0.0 <= f < 1.0 for f in shares.values()) or sum(shares.values()) >= 1.0:
        raise InputError(f"split fractions {shares} must each lie in [0, 1) and sum to less than 1.")
    if rest in shares:
        raise InputError(f"part '{rest}' is the remainder and cannot also have a fraction.")
    labels = np.zeros(n_items, dtype=np.int64) if groups is None else np.asarray(groups)
    if labels.shape[0] != n_items:
        raise InputError(f"groups has {labels.shape[0]} labels for {n_items} items.")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {rest: [], **{name: [] for name in shares}}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if members.size <= min_items:
            parts[rest].append(members)
            continue
        start = 0
        for name, share in shares.items():
            n = int(round(share * members.size))
            if share > 0 and members.size > len(shares):
                n = max(n, 1)
            n = min(n, members.size - start - 1)  # keep one item for the remainder
            parts[name].append(members[start : start + n])
            start += n
        parts[rest].append(members[start:])
    return {
        name: np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64) for name, chunks in parts.items()
    }
