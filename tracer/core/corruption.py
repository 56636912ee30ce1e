"""Noise corruption as ROME computes it (docs/method.md#d1-corrupting-the-subject-with-noise).

- The draws are ROME's: `numpy.random.RandomState(seed).randn(N, e - b, D)` (seed 1 by
  default), the same for the corrupted run and every cell of a trace, so cells differ
  only by what they restore. `u<h>` draws `uniform(-1, 1, ...)` instead; `t<df>`
  multiplies each (sample, token) vector by a factor sqrt((df - 2) / chi2) from
  `RandomState(2).chisquare(df, 1000)`, as ROME does.
- The noise is formed and added in float64 and the sum rounded once to float32, as
  PyTorch does in ROME's in-place add: the corrupted embeddings are bit-exact.
- The sigmas are computed in float64 (a float32 variance over the 28M values of a
  49k x 576 matrix is 3% low): `subject_sigma` is ROME's `collect_embedding_std`
  (unbiased std over the pooled token embeddings of known_1000's subjects, each
  tokenized alone without special tokens); `embedding_sigma` pools every value of the
  embedding matrix.

Where ROME's `t<df>` uses a Gaussian fitted to text embeddings (which needs a
wikitext sample, unavailable offline), ours uses the spherical s3 Gaussian: the same
factors, the variance of s3.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..inputs.facts_file import load_facts
from ..settings import T_FACTORS, NoiseRule


def known_subjects(path: str = "known_1000") -> list[str]:
    """Every known_1000 subject, in file order, duplicates kept (ROME pools all 1,209)."""
    return [fact.subject for fact in load_facts(path)]


def subject_token_ids(tokenizer, subjects: list[str]) -> list[int]:
    """The token ids of each subject encoded alone (no special tokens), concatenated."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(subjects, add_special_tokens=False):
        ids += encoding.ids
    return ids


def pooled_std(values: np.ndarray) -> float:
    """Unbiased std of all values around one mean, reduced in float64."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1))


def noise_std(rule: NoiseRule, subject_sigma, embedding_sigma) -> float:
    """The absolute std of the rule's noise; the sigmas are callables (computed only when needed)."""
    if rule.basis == "absolute":
        return rule.value
    if rule.basis == "subject":
        return rule.value * subject_sigma()
    if rule.basis == "embedding":
        return rule.value * embedding_sigma()
    if rule.basis == "uniform":
        return rule.value / np.sqrt(3.0)
    return 3.0 * subject_sigma()  # student-t: the variance of s3


def draws(rule: NoiseRule, seed: int, samples: int, n_subject: int, hidden: int, std: float) -> np.ndarray:
    """The noise [samples, n_subject, hidden] in float64, drawn as ROME draws it."""
    shape = (samples, n_subject, hidden)
    rs = np.random.RandomState(seed)
    if rule.basis == "uniform":
        return rule.value * rs.uniform(-1, 1, shape)
    z = rs.randn(*shape)
    if rule.basis != "student-t":
        return std * z
    if samples * n_subject > T_FACTORS:
        raise InputError(f"noise rule {rule.text}: samples x subject tokens ({samples} x {n_subject}) "
                         f"must be at most {T_FACTORS}, the number of Student-t factors ROME draws")
    df = rule.value
    factors = np.sqrt((df - 2) / np.random.RandomState(2).chisquare(df, T_FACTORS))
    return std * z * factors[: samples * n_subject].reshape(samples, n_subject, 1)


def corrupted_embeddings(clean: np.ndarray, subject: tuple[int, int], noise: np.ndarray, *,
                         replace: bool = False) -> np.ndarray:
    """[samples, T, D] float32: the clean embeddings [T, D] with the subject's rows
    [b, e) plus the noise (or replaced by it), summed in float64 and rounded once."""
    begin, end = subject
    samples = noise.shape[0]
    out = np.repeat(np.asarray(clean, dtype=np.float32)[None], samples, axis=0)
    base = 0.0 if replace else np.asarray(clean[begin:end], dtype=np.float64)[None]
    out[:, begin:end] = (base + noise).astype(np.float32)
    return out
