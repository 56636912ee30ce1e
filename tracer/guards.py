"""Guards: the conditions under which a trace's numbers mean little, each with a stable code.

A causal trace is only as good as its corruption. The engine checks every trace (and so
every sweep fact) and reports what it finds in `TraceResult.warnings`: each warning is a
`TraceWarning`, a str (its one-line message) with a `code`, so it prints as before and
exports as ``{"code": ..., "message": ...}``.

Codes and thresholds:
    corruption-kept-target   the corrupted run's top token is still the target
    negative-total-effect    p_clean - p_corrupted <= 0: the corruption did not lower P(target)
    small-total-effect       p_clean - p_corrupted < MIN_TOTAL_EFFECT (0.05) or < 20% of p_clean;
                             below 0.05, recovery % is not computed (shown as not available)
    weak-target              the target is whitespace, punctuation or a stop word
    target-not-predicted     --target is not the clean run's top token (which is named)
    subject-unchanged        the substitution leaves the subject's tokens as they are
    nothing-corrupted        the corrupted prompt tokenizes exactly like the prompt
    no-counterpart           a position of the prompt has no aligned token in a shorter corrupted
                             prompt: it is not restored and its cells have no value
    position-before-corruption  a chosen position lies before the first corrupted token:
                             restoring it changes nothing (its cells equal the corrupted run)
    slow-blas                MLX runs on its reference BLAS
"""

from __future__ import annotations

import string

MIN_TOTAL_EFFECT = 0.05  # absolute; below it recovery % is not available
MIN_RELATIVE_EFFECT = 0.20  # of p_clean

# short function words a factual target should not be (English; the known_1000 attributes are none)
STOP_WORDS = frozenset("""
a an the and or but if of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how
all any both each few more most other some such no nor not only own same so than too very can will just
is are was were be been being have has had having do does did it its this that these those i me my we our
you your he him his she her they them their what which who whom as s t
""".split())


class TraceWarning(str):
    """A warning's one-line message (a str), with its stable `code`."""

    code: str

    def __new__(cls, code: str, message: str) -> "TraceWarning":
        obj = super().__new__(cls, message)
        obj.code = code
        return obj

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


def warning_dict(w) -> dict:
    """A warning as exported: a TraceWarning's code and message; a plain string gets code "note"."""
    return w.to_dict() if isinstance(w, TraceWarning) else {"code": "note", "message": str(w)}


CODES = ("corruption-kept-target", "negative-total-effect", "small-total-effect", "weak-target", "target-not-predicted",
         "subject-unchanged", "nothing-corrupted", "no-counterpart", "position-before-corruption", "slow-blas")


def parse_codes(value) -> tuple[str, ...]:
    """Warning codes as a user gives them (`sweep --skip-flagged`): "none" (or empty) for none,
    "flagged" for LEADING_CODES, else codes separated by commas, or a list of them.

    Returns:
        The distinct codes, sorted.

    Raises:
        InputError: an unknown code (the message lists the codes).
    """
    from .errors import InputError

    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(c, str) for c in items):
        raise InputError(f"warning codes must be text such as small-total-effect,corruption-kept-target (got {value!r:.60})")
    codes = set()
    for item in (c.strip().lower() for c in items):
        if item in ("", "none"):
            continue
        if item not in CODES and item != "flagged":
            raise InputError(f"unknown warning code {item!r:.40}: choose from flagged ({', '.join(LEADING_CODES)}), "
                             f"{', '.join(CODES)} or none")
        codes.update(LEADING_CODES if item == "flagged" else (item,))
    return tuple(sorted(codes))


# the warnings that void a trace's reading: its text leads with them and names no peak, and
# `sweep --skip-flagged` leaves their facts out by default (tracer.sweeps)
LEADING_CODES = ("negative-total-effect", "small-total-effect", "corruption-kept-target")


def warning_code(w) -> str:
    """A warning's code ("note" for a plain string)."""
    return w.code if isinstance(w, TraceWarning) else "note"


def leading_warnings(warnings) -> list:
    """The warnings among `warnings` whose code is in LEADING_CODES, in their order."""
    return [w for w in warnings if warning_code(w) in LEADING_CODES]


def warning_lines(warnings) -> list[str]:
    """The warnings as saved with the numbers, "warning [code]: message", the leading ones first."""
    lead = leading_warnings(warnings)
    return [f"warning [{warning_code(w)}]: {w}" for w in lead + [w for w in warnings if w not in lead]]


def recovery_available(p_clean: float, p_corrupted: float) -> bool:
    """Whether recovery % means anything: the corruption lowered P(target) by at least 0.05."""
    return p_clean - p_corrupted >= MIN_TOTAL_EFFECT


def is_weak_target(text: str) -> bool:
    """Whitespace, punctuation or a stop word: a target a fact does not hinge on."""
    word = text.strip()
    return not word or all(c in string.punctuation or c.isspace() for c in word) or word.lower() in STOP_WORDS


def trace_guards(*, target_text: str, p_clean: float, p_corrupted: float, corrupted_top_id, target_id,
                 clean_top_id, clean_top_text: str, target_given: bool) -> list[TraceWarning]:
    """The guards every trace gets, from its clean and corrupted runs.

    The ids are token ids, or for a target of several tokens tuples of them: the target's tokens
    and each run's top token at every step along the target (teacher-forced), so "kept the target"
    means the corrupted run would still write the whole target."""
    out = []
    gap = p_clean - p_corrupted
    if corrupted_top_id == target_id:
        out.append(TraceWarning("corruption-kept-target",
                                f"the corruption kept the target {target_text!r} as the top prediction "
                                f"(P {p_corrupted:.3f}): the corrupted run still knows the answer"))
    if gap <= 0:
        out.append(TraceWarning("negative-total-effect",
                                f"the corruption did not lower P({target_text!r}): clean {p_clean:.4f}, "
                                f"corrupted {p_corrupted:.4f}; recovery % is not available"))
    elif gap < MIN_TOTAL_EFFECT or gap < MIN_RELATIVE_EFFECT * p_clean:
        tail = "; recovery % is not available" if gap < MIN_TOTAL_EFFECT else ""
        out.append(TraceWarning("small-total-effect",
                                f"small total effect: P({target_text!r}) falls only from {p_clean:.4f} to "
                                f"{p_corrupted:.4f} ({gap:.4f}; below {MIN_TOTAL_EFFECT} or "
                                f"{MIN_RELATIVE_EFFECT:.0%} of p_clean){tail}"))
    if is_weak_target(target_text):
        out.append(TraceWarning("weak-target",
                                f"the target {target_text!r} is whitespace, punctuation or a stop word: "
                                "give the fact's answer with --target"))
    if target_given and clean_top_id != target_id:
        out.append(TraceWarning("target-not-predicted",
                                f"the target {target_text!r} is not what the clean run predicts "
                                f"({clean_top_text!r}, P {p_clean:.3f} for the target)"))
    return out


def substitution_guards(clean_ids: list[int], corrupted_ids: list[int], subject: tuple[int, int],
                        mapping: list | None = None) -> list[TraceWarning]:
    """Guards of a substitution: nothing or not the subject changed.

    Args:
        clean_ids, corrupted_ids: the two prompts' token ids.
        subject: the subject's token range [b, e) in the prompt.
        mapping: each clean position's aligned corrupted position (None: no counterpart), for
            prompts of different lengths; None: position by position.

    Returns:
        The warnings (codes nothing-corrupted, subject-unchanged), or [].
    """
    if clean_ids == corrupted_ids:
        return [TraceWarning("nothing-corrupted",
                             "the corrupted prompt tokenizes exactly like the prompt: nothing is corrupted")]
    b, e = subject
    mapping = list(range(len(clean_ids))) if mapping is None else mapping
    counterparts = [None if mapping[i] is None or mapping[i] >= len(corrupted_ids) else corrupted_ids[mapping[i]]
                    for i in range(b, e)]
    if clean_ids[b:e] == counterparts:
        return [TraceWarning("subject-unchanged",
                             "the corrupted prompt leaves the subject's tokens unchanged: "
                             "this traces another change, not the subject")]
    return []


def position_guards(positions, first_corrupt: int, tokens: list[str]) -> list[TraceWarning]:
    """A chosen position before the first corrupted token: its cells equal the corrupted run."""
    if positions == "all":
        return []
    early = [p for p in positions if p < first_corrupt]
    if not early:
        return []
    return [TraceWarning("position-before-corruption",
                         f"position(s) {named_positions(early, tokens)} lie before the first corrupted token ({first_corrupt}): "
                         "they carry the clean state already, so restoring them changes nothing")]


def unaligned_guards(positions, mapping: list, tokens: list[str]) -> list[TraceWarning]:
    """Positions of the prompt with no counterpart in an aligned, shorter corrupted prompt.

    Args:
        positions: "all" or the chosen positions.
        mapping: each prompt position's aligned corrupted position (None: no counterpart).
        tokens: the prompt's token texts.

    Returns:
        One warning (code no-counterpart) naming them: they are not restored and their cells have
        no value; or [].
    """
    chosen = range(len(tokens)) if positions == "all" else positions
    missing = [p for p in chosen if mapping[p] is None]
    if not missing:
        return []
    return [TraceWarning("no-counterpart",
                         f"position(s) {named_positions(missing, tokens)} have no counterpart in the corrupted prompt (it is shorter "
                         "there): they are not restored and their cells have no value")]


def named_positions(positions, tokens: list[str]) -> str:
    """Positions as a message names them: "0 'The', 2 ' of'"."""
    return ", ".join(f"{p} {tokens[p]!r}" for p in positions)
