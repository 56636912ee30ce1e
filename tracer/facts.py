"""Facts for a sweep: the file (ROME's known_1000 format), the bundled known_1000, and the fact filter.

A facts file is a JSON list of objects with known_id, subject, attribute and
prompt (or a template to fill with the subject). `resolve_facts("known_1000")`
names the copy of ROME's known_1000.json shipped in tracer/data (see its NOTICE);
an existing path always wins over the bare name.

The filter decides which facts a sweep traces (ROME-METHOD.md D4):
    rome         decode([argmax]).strip() == attribute: exact, case-sensitive, the
                 whole attribute (ROME's rule; a two-token attribute never passes)
    first-token  argmax == first token of " " + attribute (this project's earlier rule;
                 it also keeps multi-token attributes whose first piece is predicted)
Either way the traced target is the clean argmax.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import InputError, read_user_file

REQUIRED_FIELDS = ("known_id", "subject", "attribute")
BUNDLED = {"known_1000": os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "known_1000.json")}
FILTERS = ("rome", "first-token")
DEFAULT_FILTER = "rome"
LEGACY_FILTER = "first-token"  # results lines written before the filter was recorded used this rule
FILTER_RULES = {
    "rome": "the clean top token, decoded and stripped, equals the whole attribute (ROME's rule)",
    "first-token": "the clean top token is the first token of ' ' + attribute (not ROME's rule)",
}


@dataclass(frozen=True)
class Fact:
    known_id: int | str
    subject: str
    attribute: str
    prompt: str
    relation_id: str | None = None


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
    raise InputError(f"unknown filter {rule!r}: choose {' or '.join(FILTERS)}")


def load_facts(path: str) -> list[Fact]:
    """Facts from a JSON list in ROME's known_1000 format (`path` may be a bundled name,
    see resolve_facts); any problem is one InputError line."""
    path = resolve_facts(path)
    raw = read_user_file(path, "facts file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"facts file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"facts file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, list):
        raise InputError(f"facts file {path} must hold a JSON list of facts (known_1000 format), not a {type(data).__name__}")
    facts: list[Fact] = []
    seen: set = set()
    for i, item in enumerate(data):
        where = f"facts file {path}: fact #{i}"
        if not isinstance(item, dict):
            raise InputError(f"{where} is a {type(item).__name__}, not an object")
        missing = [k for k in REQUIRED_FIELDS if k not in item]
        if "prompt" not in item and "template" not in item:
            missing.append("prompt")
        if missing:
            raise InputError(f"{where} has no {', '.join(repr(m) for m in missing)} (need known_id, subject, attribute, prompt)")
        known_id = item["known_id"]
        if not isinstance(known_id, (int, str)) or isinstance(known_id, bool):
            raise InputError(f"{where}: known_id must be a number or a string")
        for key in ("subject", "attribute"):
            if not isinstance(item[key], str):
                raise InputError(f"{where}: {key} must be a string")
        prompt = item.get("prompt")
        if prompt is None:
            template = item["template"]
            # exactly one "{}" and no other braces: str.format would also read named, numbered,
            # attribute ("{0.__class__}") or padding ("{:>999999999}") fields from a facts file
            if not isinstance(template, str) or template.count("{}") != 1 or any(
                    b in template.replace("{}", "", 1) for b in "{}"):
                raise InputError(f"{where}: template must be a string with one {{}} for the subject and no other braces")
            prompt = template.replace("{}", item["subject"], 1)
        if not isinstance(prompt, str):
            raise InputError(f"{where}: prompt must be a string")
        if known_id in seen:
            raise InputError(f"{where}: known_id {known_id!r} appears twice")
        seen.add(known_id)
        relation = item.get("relation_id")
        facts.append(Fact(known_id, item["subject"], item["attribute"], prompt, relation if isinstance(relation, str) else None))
    return facts
