"""Noise corruption: Gaussian noise on the subject tokens' input embeddings.

The draws come from NumPy's seeded generator (the same on every platform) and
are shared by every cell of a trace, as in the paper, so differences between
cells are not differences of noise.
"""

from __future__ import annotations

import numpy as np


def noise_delta(seed: int, samples: int, n_tokens: int, subject: tuple[int, int], hidden: int, std: float) -> np.ndarray:
    """[samples, n_tokens, hidden] float32: N(0, std^2) on subject positions, zero elsewhere."""
    begin, end = subject
    rng = np.random.default_rng(seed)
    delta = np.zeros((samples, n_tokens, hidden), dtype=np.float32)
    delta[:, begin:end, :] = rng.standard_normal((samples, end - begin, hidden)) * std
    return delta
