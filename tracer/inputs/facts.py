"""Facts for a sweep: the file, the bundled known_1000, and the fact filter.

A facts file holds facts in ROME's known_1000 format (known_id, subject, attribute and
prompt, or a template to fill with the subject) or prompt pairs (prompt,
corrupted_prompt, subject, target?), as a JSON list, JSON Lines or CSV with a header
row (tracer.inputs.facts_file reads the rows; each row's kind is told by its keys).
`resolve_facts("known_1000")` names the copy of ROME's known_1000.json shipped in
tracer/data (see its NOTICE); an existing path always wins over the bare name.

The filter decides which facts a sweep traces (docs/method.md#d4-the-facts-and-the-filter):
    rome         decode([argmax]).strip() == attribute: exact, case-sensitive, the
                 whole attribute (ROME's rule; a two-token attribute never passes)
    first-token  argmax == first token of " " + attribute (this project's earlier rule;
                 it also keeps multi-token attributes whose first piece is predicted)
    none         every fact (no filter)
Either way the traced target is the clean argmax. Prompt pairs (substitution mode) have
their own rule: without a target none applies; with one, a pair is kept when the clean
top token is the target's first token, unless the filter is none (pair_passes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InputError

REQUIRED_FIELDS = ("known_id", "subject", "attribute")
BUNDLED = {"known_1000": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "known_1000.json")}
FILTERS = ("rome", "first-token", "none")
DEFAULT_FILTER = "rome"
LEGACY_FILTER = "first-token"  # results lines written before the filter was recorded used this rule
FILTER_RULES = {
    "rome": "the clean top token, decoded and stripped, equals the whole attribute (ROME's rule)",
    "first-token": "the clean top token is the first token of ' ' + attribute (not ROME's rule)",
    "none": "every fact is traced (no filter)",
}
PAIR_RULE = "the clean top token is the first token of the pair's target (pairs without a target: always)"


@dataclass(frozen=True)
class Fact:
    """One fact of a sweep or a batch: a known_1000 fact (noise corruption), or a prompt pair
    (`corrupted_prompt` set: substitution). `attribute` is "" for a pair (its `target`, if
    any, is what is traced); `target` is None for known_1000 facts (ROME traces the argmax)."""

    known_id: int | str
    subject: str
    attribute: str
    prompt: str
    relation_id: str | None = None
    corrupted_prompt: str | None = None
    target: str | None = None
    corrupted_subject: str | None = None

    @property
    def mode(self) -> str:
        """"substitution" for a prompt pair, "noise" otherwise."""
        return "noise" if self.corrupted_prompt is None else "substitution"


def resolve_facts(spec: str) -> str:
    """The path a facts argument names: an existing file as given; otherwise a bundled
    data set by its bare name ("known_1000" or "known_1000.json"); otherwise the spec
    unchanged (load_facts then reports it missing)."""
    spec = spec.strip()
    if os.path.exists(spec):
        return spec
    name = spec[: -len(".json")] if spec.endswith(".json") else spec
    return BUNDLED.get(name, spec)


def check_filter(rule: str) -> str:
    if rule not in FILTERS:
        raise InputError(f"unknown filter {rule!r}: choose {' or '.join(FILTERS)}")
    return rule


def passes_filter(rule: str, top_text: str, attribute: str, top_id: int | None = None, first_token_id: int | None = None) -> bool:
    """Does a fact pass `rule`, given the clean top token (its id and its text decoded
    alone) and, for first-token, the id of the first token of " " + attribute?"""
    if rule == "rome":
        return top_text.strip() == attribute
    if rule == "first-token":
        return top_id is not None and top_id == first_token_id
    if rule == "none":
        return True
    raise InputError(f"unknown filter {rule!r}: choose {' or '.join(FILTERS)}")


def pair_passes(rule: str, top_id: int, target_first_id: int | None) -> bool:
    """Is a prompt pair traced? Without a target (`target_first_id` None) or under rule none,
    always; otherwise when the clean top token is the target's first token.

    Args:
        rule: a filter of FILTERS.
        top_id: the clean run's top next token.
        target_first_id: the first token of the pair's target, or None without a target.

    Returns:
        True when the pair is kept.
    """
    check_filter(rule)
    return rule == "none" or target_first_id is None or top_id == target_first_id
