"""Prompts as tokens: ids, display texts, character offsets, the subject's span, the target."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from .errors import InputError


@dataclass
class Tokens:
    ids: list[int]
    texts: list[str]  # each token decoded on its own (" Tower")
    offsets: list[tuple[int, int]]  # character span in the prompt; (0, 0) for added specials
    special: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def tokenize(tokenizer: Tokenizer, text: str) -> Tokens:
    if not text or not text.strip():
        raise InputError("the prompt is empty")
    enc = tokenizer.encode(text)
    ids = list(enc.ids)
    special = [bool(s) for s in enc.special_tokens_mask]
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return Tokens(ids, texts, [tuple(o) for o in enc.offsets], special)


def subject_span(prompt: str, subject: str, tokens: Tokens) -> tuple[int, int]:
    """Token range [begin, end) covering the subject's FIRST occurrence in the prompt.

    A token belongs to the subject when its characters overlap the subject's
    characters (a token " Eiffel" with a leading space counts)."""
    if not subject or not subject.strip():
        raise InputError("the subject is empty")
    start = prompt.find(subject)
    if start < 0:
        stripped = subject.strip()
        start = prompt.find(stripped)
        if start < 0:
            raise InputError(f"subject {subject!r} not found in prompt {prompt!r}")
        subject = stripped
    end = start + len(subject)
    inside = [
        i
        for i, (s, e) in enumerate(tokens.offsets)
        if not tokens.special[i] and s < end and e > start
    ]
    if not inside:
        raise InputError(f"subject {subject!r} covers no token of the prompt")
    return inside[0], inside[-1] + 1


def target_token(tokenizer: Tokenizer, target: str) -> tuple[int, str, list[str]]:
    """First token of the target. A target without leading whitespace gets one
    (as ROME does: " Paris"), since that is how it follows a prompt.
    Returns (id, text, warnings)."""
    if not target or not target.strip():
        raise InputError("the target is empty")
    text = target if target[0].isspace() else " " + target
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if not ids:
        raise InputError(f"target {target!r} encodes to no token")
    first = tokenizer.decode([ids[0]], skip_special_tokens=False)
    warnings = []
    if len(ids) > 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        warnings.append(
            f"target {text!r} is {len(ids)} tokens {pieces}; tracing its first token {first!r}"
        )
    return ids[0], first, warnings


def check_substitution(clean: Tokens, corrupted: Tokens) -> int:
    """The corrupted prompt must tokenize to the same length; returns the first
    position where the two differ (everything before it is exactly unaffected)."""
    if len(clean) != len(corrupted):
        raise InputError(
            f"corrupted prompt has {len(corrupted)} tokens but the prompt has {len(clean)}: "
            f"{corrupted.texts} vs {clean.texts}"
        )
    for i, (a, b) in enumerate(zip(clean.ids, corrupted.ids)):
        if a != b:
            return i
    return len(clean)
