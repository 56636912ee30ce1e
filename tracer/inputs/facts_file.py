"""The rows of a facts file: a JSON list, JSON Lines or CSV with a header row, each row a fact.

The format comes from the name (.json a JSON list, .jsonl/.ndjson JSON Lines, .csv CSV), or
else from the content (a list, objects one per line, or a CSV header). A ".json" file holding
one object per line is read as JSON Lines. Each row's kind comes from its keys:

    pair    corrupted_prompt given: prompt, corrupted_prompt, subject, target (optional),
            corrupted_subject (optional); traced by substitution
    known   attribute given: ROME's known_1000 format, subject, attribute, prompt (or a
            template with one {} for the subject), relation_id (optional); traced with noise
            (ROME's counterfact records, {case_id, requested_rewrite: {prompt, subject,
            target_true: {str}, relation_id}}, are read as such rows: counterfact_item)
    plain   prompt and subject only (target optional): a noise trace (trace --batch only)

known_id (or id) is optional except in a JSON list of known_1000 facts; without one, a row's
id is its index among the file's rows (0-based). Empty CSV cells and empty targets count as
absent. `read_rows` keeps going past a bad row (trace --batch); `load_facts` (tracer.inputs.facts)
stops at the first one. Every message names the row: "FILE line N" (JSON Lines, CSV) or
"FILE: fact #I" (a JSON list).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import NamedTuple

from ..errors import InputError, one_line
from ..userfiles import read_user_file
from .facts import Fact, resolve_facts

PAIR_FIELDS = ("prompt", "corrupted_prompt", "subject")


class Row(NamedTuple):
    """One row of a facts file: `where` names it in messages ("facts file F line 3"), `label`
    alone ("line 3", "fact #2"), `fact` is the Fact or a one-line error about the row."""

    where: str
    label: str
    fact: Fact | str
OPTIONAL_TEXT = ("target", "corrupted_subject", "relation_id")


def _format(path: str, text: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    head = text.lstrip()[:1]
    if ext == ".csv":
        return "csv"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".json" or head == "[":
        try:
            json.loads(text)
            return "json"
        except json.JSONDecodeError as exc:
            return "jsonl" if head == "{" and exc.msg == "Extra data" else "json"
    return "jsonl" if head == "{" else "csv"


def read_items(path: str, what: str = "facts file") -> tuple[str, list[tuple[str, str, dict | str]]]:
    """The rows of a facts file, unparsed.

    Args:
        path: the file.
        what: how messages name it ("facts file", "batch file").

    Returns:
        (format, [(where, label, the row as a dict, or a one-line error about it)]).

    Raises:
        InputError: the file cannot be read at all (missing, not UTF-8, no CSV header, a JSON
            document that is not a list).
    """
    raw = read_user_file(path, what)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text") from None
    fmt = _format(path, text)
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(data, list):
            raise InputError(f"{what} {path} must hold a JSON list of facts (known_1000 format) or one JSON object "
                             f"per line (JSON Lines), not a {type(data).__name__}")
        return fmt, [(f"{what} {path}: fact #{i}", f"fact #{i}", item if isinstance(item, dict) else
                      f"{what} {path}: fact #{i} is a {type(item).__name__}, not an object") for i, item in enumerate(data)]
    if fmt == "jsonl":
        items: list[tuple[str, str, dict | str]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{what} {path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                items.append((where, f"line {n}", f"{where} is not valid JSON: {exc.msg} at column {exc.colno}"))
                continue
            items.append((where, f"line {n}", obj if isinstance(obj, dict) else
                          f"{where} is a JSON {type(obj).__name__}, not an object"))
        return fmt, items
    return fmt, _csv_items(path, text, what)


def _csv_items(path: str, text: str, what: str) -> list[tuple[str, str, dict | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{what} {path}: unreadable CSV header: {exc}") from None
    names = [h.strip() for h in header or []]
    if "prompt" not in names or "subject" not in names:
        raise InputError(f"{what} {path}: a CSV file needs a header row naming at least prompt and subject "
                         f"(and corrupted_prompt, target for prompt pairs); got {names[:6]}")
    twice = sorted({n for n in names if n and names.count(n) > 1})
    if twice:
        raise InputError(f"{what} {path}: the CSV header names {', '.join(twice)} more than once")
    items: list[tuple[str, str, dict | str]] = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            where = f"{what} {path} line {start}"
            items.append((where, f"line {start}", f"{where} is not valid CSV: {exc}"))
            start = reader.line_num + 1
            continue
        where, label = f"{what} {path} line {start}", f"line {start}"
        start = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            items.append((where, label, f"{where} has {len(row)} fields but the header has {len(names)}"))
            continue
        items.append((where, label, {k: v for k, v in zip(names, row) if k and v != ""}))
    return items


def _text(item: dict, key: str, where: str, *, required: bool, nonempty: bool = True) -> str | None:
    value = item.get(key)
    if value is None or (value == "" and key in OPTIONAL_TEXT):
        if required:
            raise InputError(f"{where} has no {key!r}")
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: {key} must be a string")
    if required and nonempty and not value.strip():
        raise InputError(f"{where}: {key} is empty")
    return value


def _known_id(item: dict, index: int, where: str, *, required: bool):
    key = "known_id" if "known_id" in item else "id" if "id" in item else None
    if key is None:
        if required:
            raise InputError(f"{where} has no 'known_id' (need known_id, subject, attribute, prompt)")
        return index
    value = item[key]
    if isinstance(value, str) and value.strip().isdigit():  # CSV cells are text
        value = int(value)
    if not isinstance(value, (int, str)) or isinstance(value, bool):
        raise InputError(f"{where}: {key} must be a number or a string")
    return value


def counterfact_item(item: dict, where: str) -> dict:
    """A record of ROME's counterfact data set as a known_1000 row: its case_id is the known_id,
    requested_rewrite's subject, target_true's str (the true attribute) and prompt (a template
    with {} for the subject), and its relation_id. The rewrite's target_new and the
    paraphrase, neighbourhood and generation prompts are not read.

    Args:
        item: the record.
        where: how messages name it.

    Returns:
        A row for the known_1000 path of fact_from_item.

    Raises:
        InputError: a requested_rewrite without a usable prompt, subject or target_true.
    """
    rewrite = item["requested_rewrite"]
    if not isinstance(rewrite, dict):
        raise InputError(f"{where}: requested_rewrite must be an object (ROME's counterfact format)")
    true = rewrite.get("target_true")
    missing = [k for k in ("prompt", "subject") if k not in rewrite]
    if not isinstance(true, dict) or "str" not in true:
        missing.append("target_true.str")
    if missing:
        raise InputError(f"{where}: requested_rewrite has no {', '.join(repr(m) for m in missing)} "
                         "(counterfact: prompt with {} for the subject, subject, target_true {str})")
    row = {"subject": rewrite["subject"], "attribute": true["str"], "template": rewrite["prompt"]}
    for key, value in (("known_id", item.get("case_id", item.get("known_id"))), ("relation_id", rewrite.get("relation_id"))):
        if value is not None:
            row[key] = value
    return row


def fact_from_item(item: dict, index: int, where: str, *, plain: bool = False, known_id_required: bool = False) -> Fact:
    """One row as a Fact (see the module docstring).

    Args:
        item: the row's fields.
        index: the row's index among the file's rows (its id when it names none).
        where: how messages name the row.
        plain: allow rows with neither a corrupted prompt nor an attribute (noise traces).
        known_id_required: a known_1000 row must name its known_id (a JSON list, as ROME's file).

    Returns:
        The Fact.

    Raises:
        InputError: a missing or mistyped field, naming `where`.
    """
    if "requested_rewrite" in item:
        item = counterfact_item(item, where)
    if "corrupted_prompt" in item:
        missing = [k for k in PAIR_FIELDS if item.get(k) in (None, "")]
        if missing:
            raise InputError(f"{where} has no {', '.join(repr(m) for m in missing)} "
                             "(a prompt pair needs prompt, corrupted_prompt, subject; target is optional)")
        return Fact(
            _known_id(item, index, where, required=False),
            _text(item, "subject", where, required=True),
            "",
            _text(item, "prompt", where, required=True),
            _text(item, "relation_id", where, required=False),
            corrupted_prompt=_text(item, "corrupted_prompt", where, required=True),
            target=_text(item, "target", where, required=False),
            corrupted_subject=_text(item, "corrupted_subject", where, required=False),
        )
    if "attribute" in item or not plain:
        missing = [k for k in ("subject", "attribute") if k not in item]
        if "prompt" not in item and "template" not in item:
            missing.append("prompt")
        if missing:
            raise InputError(f"{where} has no {', '.join(repr(m) for m in missing)} (a known_1000 fact needs known_id, "
                             "subject, attribute, prompt; a prompt pair needs prompt, corrupted_prompt, subject)")
        known_id = _known_id(item, index, where, required=known_id_required)
        # as given: an empty subject or attribute makes a skipped line (bad-input), as in ROME's files
        subject = _text(item, "subject", where, required=True, nonempty=False)
        attribute = _text(item, "attribute", where, required=True, nonempty=False)
        prompt = item.get("prompt")
        if prompt is None:
            template = item["template"]
            # exactly one "{}" and no other braces: str.format would also read named, numbered,
            # attribute ("{0.__class__}") or padding ("{:>999999999}") fields from a facts file
            if not isinstance(template, str) or template.count("{}") != 1 or any(
                    b in template.replace("{}", "", 1) for b in "{}"):
                raise InputError(f"{where}: template must be a string with one {{}} for the subject and no other braces")
            prompt = template.replace("{}", subject, 1)
        if not isinstance(prompt, str):
            raise InputError(f"{where}: prompt must be a string")
        relation = item.get("relation_id")
        return Fact(known_id, subject, attribute, prompt, relation if isinstance(relation, str) else None,
                    target=_text(item, "target", where, required=False))
    missing = [k for k in ("prompt", "subject") if item.get(k) in (None, "")]
    if missing:
        raise InputError(f"{where} has no {', '.join(repr(m) for m in missing)} (need prompt and subject; "
                         "corrupted_prompt for a prompt pair)")
    return Fact(_known_id(item, index, where, required=False), _text(item, "subject", where, required=True), "",
                _text(item, "prompt", where, required=True), target=_text(item, "target", where, required=False))


def read_rows(path: str, *, plain: bool = True, what: str = "facts file") -> list[Row]:
    """Every row of a facts file, each with its Fact or a one-line error: a bad row does not
    stop the others (trace --batch).

    Args:
        path: the file.
        plain: allow plain {prompt, subject, target?} rows.
        what: how messages name the file.

    Returns:
        A Row per non-blank row, in file order.

    Raises:
        InputError: the file itself cannot be read (read_items).
    """
    fmt, items = read_items(path, what)
    rows: list[Row] = []
    for index, (where, label, item) in enumerate(items):
        if isinstance(item, str):
            rows.append(Row(where, label, item))
            continue
        try:
            rows.append(Row(where, label, fact_from_item(item, index, where, plain=plain, known_id_required=fmt == "json")))
        except InputError as exc:
            rows.append(Row(where, label, one_line(str(exc))))
    return rows


def load_rows(path: str, what: str = "facts file") -> list[Fact]:
    """The facts of a file for a sweep: every row valid, unique ids, one mode (all prompt pairs or
    all known_1000 facts).

    Args:
        path: the file (already resolved: tracer.inputs.facts.resolve_facts).
        what: how messages name it.

    Returns:
        The facts in file order.

    Raises:
        InputError: the first problem, naming its row.
    """
    facts: list[Fact] = []
    seen: set = set()
    first_where = None
    for where, _, fact in read_rows(path, plain=False, what=what):
        if isinstance(fact, str):
            raise InputError(fact)
        if fact.known_id in seen:
            raise InputError(f"{where}: known_id {fact.known_id!r} appears twice")
        seen.add(fact.known_id)
        if facts and fact.mode != facts[0].mode:
            kinds = {"noise": "a known_1000 fact (noise)", "substitution": "a prompt pair (substitution)"}
            raise InputError(f"{where} is {kinds[fact.mode]} but {first_where} is {kinds[facts[0].mode]}: "
                             "a sweep traces one kind; split the file")
        first_where = first_where or where
        facts.append(fact)
    return facts


def load_facts(path: str) -> list[Fact]:
    """The facts of a sweep: ROME's known_1000 facts or prompt pairs, from a JSON list, JSON
    Lines or CSV (tracer.inputs.facts_file; `path` may be a bundled name, see resolve_facts). Every row must
    be valid, ids unique and all rows of one kind; any problem is one InputError line naming
    the row.

    Args:
        path: a facts file, or a bundled name ("known_1000").

    Returns:
        The facts in file order (all noise facts, or all prompt pairs).

    Raises:
        InputError: an unreadable file or a bad row.
    """
    return load_rows(resolve_facts(path))
