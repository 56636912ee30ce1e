"""Prompts as tokens: ids, display texts, character offsets, the subject's span, the target, and the
alignment of a corrupted prompt of another token length with the prompt."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from ..errors import InputError


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
    if not check_text(text, what).strip():
        raise InputError(f"{what} is empty")
    enc = _encode(tokenizer, text, what)
    ids = list(enc.ids)
    special = [bool(s) for s in enc.special_tokens_mask]
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return Tokens(ids, texts, [tuple(o) for o in enc.offsets], special)


def subject_span(prompt: str, subject: str, tokens: Tokens, what: str = "subject") -> tuple[int, int]:
    """Token range [begin, end) covering the subject's FIRST occurrence in the prompt.

    A token belongs to the subject when its characters overlap the subject's
    characters (a token " Eiffel" with a leading space counts). `what` names the subject and
    its prompt in messages ("corrupted subject": "... not found in the corrupted prompt")."""
    if not isinstance(subject, str) or not subject.strip():
        raise InputError(f"the {what} is empty")
    check_text(subject, f"the {what}")
    start = prompt.find(subject)
    if start < 0:
        stripped = subject.strip()
        start = prompt.find(stripped)
        if start < 0:
            where = "the corrupted prompt" if what.startswith("corrupted") else "prompt"
            raise InputError(f"{what} {subject!r} not found in {where} {prompt!r}")
        subject = stripped
    end = start + len(subject)
    inside = [
        i
        for i, (s, e) in enumerate(tokens.offsets)
        if not tokens.special[i] and s < end and e > start
    ]
    if not inside:
        raise InputError(f"{what} {subject!r} covers no token of its prompt")
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


def target_ids(tokenizer: Tokenizer, target: str, prompt: str | None = None,
               prompt_ids: list[int] | None = None) -> list[int]:
    """Every token of the target as it follows the prompt (traced by teacher forcing).

    A target without leading whitespace gets one (as ROME does: " Paris"). When its first token
    is a bare space (" 0" -> [" ", "0"] in some tokenizers), the target is tokenized as the model
    sees it after the prompt: the tokens of prompt + target beyond the prompt's own, when the
    prompt's tokens are a prefix of them; otherwise those of " " + target.

    Args:
        tokenizer: the model's tokenizer.
        target: the target text.
        prompt: the prompt the target follows, and prompt_ids its tokens (both or neither).

    Returns:
        The target's token ids (at least one).
    """
    if not isinstance(target, str) or not target.strip():
        raise InputError("the target is empty")
    text = target if target[0].isspace() else " " + target
    ids = list(_encode(tokenizer, text, "the target", add_special_tokens=False).ids)
    if not ids:
        raise InputError(f"target {target!r} encodes to no token")
    bare_space = not tokenizer.decode([ids[0]], skip_special_tokens=False).strip()
    if bare_space and prompt is not None and prompt_ids is not None:
        whole = list(_encode(tokenizer, prompt + text, "the prompt and target").ids)
        n = len(prompt_ids)
        if whole[:n] == list(prompt_ids) and len(whole) > n:
            ids = whole[n:]
    return ids


def align_tokens(clean_ids: list[int], corrupted_ids: list[int]) -> dict:
    """Align a corrupted prompt's tokens with the clean prompt's.

    The shared prefix and the shared suffix match token by token; the two differing spans between
    them match as blocks with their LAST tokens together (so "the subject's last token" keeps its
    counterpart): clean position i of the block maps to i + len(corrupted) - len(clean), and to
    None where the corrupted block is shorter and has no token there.

    Args:
        clean_ids: the clean prompt's token ids.
        corrupted_ids: the corrupted prompt's token ids.

    Returns:
        {"clean_to_corrupted": [corrupted index or None per clean token], "prefix": shared leading
        tokens, "suffix": shared trailing tokens (never overlapping the prefix)}.
    """
    n, m = len(clean_ids), len(corrupted_ids)
    prefix = 0
    while prefix < min(n, m) and clean_ids[prefix] == corrupted_ids[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(n, m) - prefix and clean_ids[n - 1 - suffix] == corrupted_ids[m - 1 - suffix]:
        suffix += 1
    mapping = [i if i < prefix else (i + m - n if i + m - n >= prefix else None) for i in range(n)]
    return {"clean_to_corrupted": mapping, "prefix": prefix, "suffix": suffix}


def align_prompts(clean: Tokens, corrupted: Tokens, subject: tuple[int, int],
                  corrupted_span: tuple[int, int] | None = None) -> dict:
    """The alignment (align_tokens' format) a substitution traces with, or one InputError saying
    what to do instead.

    Prompts of one token length align position by position (as always). Prompts of different
    lengths align by align_tokens: they must share tokens at the start or the end, and their
    differing span must contain part of the subject; with
    `corrupted_span` (the corrupted subject's tokens) the subject aligns with that span, last
    tokens together, and the tokens before and after it position by position, which needs as
    many tokens before (and after) the subject in both prompts.

    Args:
        clean: the prompt's tokens.
        corrupted: the corrupted prompt's tokens.
        subject: the subject's token range [b, e) in the prompt.
        corrupted_span: the corrupted subject's token range in the corrupted prompt, or None.

    Returns:
        {"clean_to_corrupted", "prefix", "suffix"}.
    """
    n, m = len(clean), len(corrupted)
    aligned = align_tokens(clean.ids, corrupted.ids)
    b, e = subject
    if corrupted_span is not None:
        b2, e2 = corrupted_span
        if b != b2 or n - e != m - e2:
            raise InputError(
                f"outside the subjects the prompts must have as many tokens: {b} vs {b2} before, "
                f"{n - e} vs {m - e2} after ({clean.texts} vs {corrupted.texts}): make the prompts "
                "differ only in the subject")
        mapping = ([i for i in range(b)] + [i + e2 - e if i + e2 - e >= b2 else None for i in range(b, e)]
                   + [i + e2 - e for i in range(e, n)])
        return {**aligned, "clean_to_corrupted": mapping}
    if n == m:
        return {**aligned, "clean_to_corrupted": list(range(n))}
    start, stop = aligned["prefix"], n - aligned["suffix"]
    if start == 0 and stop == n:
        raise InputError(
            f"the prompts have {n} and {m} tokens and share none at the start or the end ({clean.texts} vs "
            f"{corrupted.texts}): nothing aligns them; give a corrupted prompt that changes only the subject")
    if not (start < e and b < stop):
        differ = f"{clean.texts[start:stop]} vs {corrupted.texts[start:m - aligned['suffix']]}"
        raise InputError(
            f"the prompts have {n} and {m} tokens and differ in tokens {differ}, which do not include the "
            f"subject ({clean.texts[b:e]}): give --corrupted-subject (the corrupted prompt's words in place "
            "of the subject), or a corrupted prompt that changes the subject")
    return aligned
