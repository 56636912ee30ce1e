"""Which token positions a trace restores, written as people write them.

Two steps: `parse_positions` turns what a user typed (the CLI's --positions, the app's field,
the API's ``positions=``) into a keyword or a tuple of indices, knowing nothing of the prompt;
`resolve_positions` turns that into the positions of one prompt, once its tokens and the
subject's range are known.

The forms (case and spaces do not matter):

    all            the paper's token x layer grid: each row restores one token
    whole          every position of the prompt, restored together (one row)
    subject        the subject's tokens, restored together
    subject-last   the subject's last token (ROME's "last subject token")
    last           the prompt's last token
    3              one token index; negative indices count from the end (-1 = last)
    0-4            a range, both ends included; "-3--1" is the last three tokens
    0,2,5-7        a comma-separated list of indices and ranges, restored together

Every form other than "all" gives one row per kind restoring its positions together.
"""

from __future__ import annotations

import re
import warnings

from ..errors import InputError

KEYWORDS = ("all", "whole", "subject", "subject-last", "last")
MAX_RANGE = 100_000  # longest range written as a-b (longer than any model's context here)
FORMS = "all, whole, subject, subject-last, last, an index (3, -1), a range (0-4, -3--1) or a list (0,2,5-7)"

_ITEM = re.compile(r"(-?\d+)(?:\s*-\s*(-?\d+))?")


def parse_positions(text) -> str | tuple[int, ...]:
    """What a user wrote for the positions, as a keyword or token indices (not yet checked
    against a prompt: that is `resolve_positions`' job).

    Args:
        text: a string in one of the module docstring's forms ("all", "subject-last", "0-4",
            "0,2,5-7", "-1", ...), or token indices as a list or tuple of ints.

    Returns:
        One of KEYWORDS ("all", "whole", "subject", "subject-last", "last"), or a sorted tuple of
        distinct indices (negative ones, counted from the end, sort first): "0,2,5-7" ->
        (0, 2, 5, 6, 7), "-3--1" -> (-3, -2, -1).

    Raises:
        InputError: a form this grammar does not have, an empty list, a range that runs
            backwards, mixes negative and non-negative ends, or is longer than MAX_RANGE.
    """
    if isinstance(text, (list, tuple)):
        if not text:
            raise InputError("no positions chosen to restore")
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in text):
            raise InputError(f"positions must be {FORMS} (got {text!r:.60})")
        return tuple(sorted(set(text)))
    if not isinstance(text, str):
        raise InputError(f"positions must be {FORMS} (got {text!r:.60})")
    raw = text.strip().lower().replace("_", "-")
    if raw in KEYWORDS:
        return raw
    if not raw:
        raise InputError("no positions chosen to restore")
    chosen: set[int] = set()
    for item in raw.split(","):
        item = item.strip()
        m = _ITEM.fullmatch(item)
        if not m:
            raise InputError(f"bad positions {text.strip()!r:.60}: {item!r:.30} is not a position; use {FORMS}")
        first = int(m.group(1))
        last = first if m.group(2) is None else int(m.group(2))
        if (first < 0) != (last < 0):
            raise InputError(f"bad positions range {item!r:.30}: its ends must both count from the start or both "
                             "from the end (-3--1); for every position use whole")
        if last < first:
            raise InputError(f"bad positions range {item!r:.30}: it runs backwards (write {last}-{first})")
        if last - first >= MAX_RANGE:
            raise InputError(f"positions range {item!r:.30} is longer than {MAX_RANGE} tokens")
        chosen.update(range(first, last + 1))
    return tuple(sorted(chosen))


def resolve_positions(positions, subject_range: tuple[int, int], n_tokens: int):
    """The positions of one prompt that a trace restores.

    Args:
        positions: anything `parse_positions` accepts (a keyword, "0-4", indices), parsed or not.
        subject_range: the subject's token range [begin, end).
        n_tokens: the prompt's length in tokens.

    Returns:
        "all" (one row per token), or the sorted list of distinct non-negative token indices
        restored together: "whole" -> every index, "subject" -> range(begin, end),
        "subject-last" -> [end - 1], "last" -> [n_tokens - 1]; negative indices count from the end.

    Raises:
        InputError: a bad form (see parse_positions), or an index outside the prompt.
    """
    positions = parse_positions(positions)
    if positions == "all":
        return "all"
    begin, end = subject_range
    if positions == "whole":
        return list(range(n_tokens))
    if positions == "subject":
        return list(range(begin, end))
    if positions == "subject-last":
        return [end - 1]
    if positions == "last":
        return [n_tokens - 1]
    bad = [p for p in positions if not -n_tokens <= p < n_tokens]
    if bad:
        if len(bad) == 1:
            which = f"position {bad[0]}"
        elif bad == list(range(bad[0], bad[-1] + 1)):
            which = f"positions {bad[0]}..{bad[-1]}"
        else:
            which = "positions " + ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise InputError(f"{which} out of range: the prompt has {n_tokens} tokens "
                         f"(0..{n_tokens - 1}, or -{n_tokens}..-1 from the end)")
    return sorted({p % n_tokens for p in positions})


def positions_together(positions) -> str | tuple[int, ...]:
    """The positions of a single patched run (tracer.patch), which restores them all together and so
    has no per-token grid: any form but "all". "all" was patch's old spelling of "every position
    at once"; it still works, read as "whole", with a deprecation warning (everywhere else "all"
    is the paper's grid, one row per token).

    Args:
        positions: anything `parse_positions` accepts.

    Returns:
        What `parse_positions` returns, never "all".

    Raises:
        InputError: a bad form (see parse_positions).
    """
    parsed = parse_positions(positions)
    if parsed == "all":
        warnings.warn('positions="all" in tracer.patch is deprecated: it restores every position at once, '
                      'which is positions="whole" ("all" is the per-token grid of tracer.trace)',
                      FutureWarning, stacklevel=3)
        return "whole"
    return parsed
