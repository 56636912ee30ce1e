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


def check_text(text, what: str) -> str:
    """`text` if it is a str the tokenizer can encode; else one InputError naming `what`
    ("the prompt", "the subject", ...): not a string, or a lone surrogate (invalid UTF-8
    bytes on the command line arrive as those, as can a JSON "\\ud800")."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} is not valid Unicode text: {text[exc.start:exc.end]!r} at character {exc.start} "
            "(invalid UTF-8 or a lone surrogate)"
        ) from None
    return text


def _encode(tokenizer: Tokenizer, text: str, what: str, **kwargs):
    check_text(text, what)
    try:
        return tokenizer.encode(text, **kwargs)
    except Exception as exc:  # the tokenizers library raises TypeError/ValueError/its own kinds
        raise InputError(f"{what} cannot be tokenized: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def tokenize(tokenizer: Tokenizer, text: str, what: str = "the prompt") -> Tokens:
    """`what` names the text in messages ("the prompt", "the corrupted prompt")."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} is empty")
    enc = _encode(tokenizer, text, what)
    ids = list(enc.ids)
    special = [bool(s) for s in enc.special_tokens_mask]
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return Tokens(ids, texts, [tuple(o) for o in enc.offsets], special)


def subject_span(prompt: str, subject: str, tokens: Tokens) -> tuple[int, int]:
    """Token range [begin, end) covering the subject's FIRST occurrence in the prompt.

    A token belongs to the subject when its characters overlap the subject's
    characters (a token " Eiffel" with a leading space counts)."""
    if not isinstance(subject, str) or not subject.strip():
        raise InputError("the subject is empty")
    check_text(subject, "the subject")
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
    if not isinstance(target, str) or not target.strip():
        raise InputError("the target is empty")
    text = target if target[0].isspace() else " " + target
    ids = _encode(tokenizer, text, "the target", add_special_tokens=False).ids
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
