"""A sweep's files: the facts it reads and the resumable JSONL it writes.

Facts come in ROME's known_1000 format (tracer.inputs.facts: load_facts, resolve_facts,
the fact filter).

The file (format version 1), one JSON object per line, each self-contained:
    common:  v, status ("kept"/"skipped"), known_id, relation_id, prompt, subject,
             attribute, config {model, kinds, samples, noise, replace, window, seed, sever, filter, mode,
             skip_flagged}
             (noise is the rule, e.g. "s3"; lines of versions before the rules hold a number k)
             (a line without "filter" was written with the first-token rule)
             (mode: "noise" for known_1000 facts, "substitution" for prompt pairs; a line
             without it is noise)
    pairs:   also corrupted_prompt (and corrupted_subject when given); attribute is the
             pair's target ("" without one)
    kept:    tokens, input_ids, subject_range [b, e), target, target_id, clean_prob,
             corrupted_prob, clean_top, corrupted_top ([id, text, p] each),
             noise_std, grids {kind: {"prob": rows(tokens) x layers}}, seconds,
             warnings [{code, message}] (tracer.guards; older lines hold plain strings);
             pairs: alignment (TraceResult.alignment) when the trace has one
    skipped: skipped (reason code: wrong-prediction, bad-input, or flagged:CODE for a traced fact whose
             warning --skip-flagged names), detail (one line), target, target_id, top ([id, text, p])

Durability: a line is written with one os.write on an O_APPEND descriptor and
then fsync'ed, so a run killed (even with SIGKILL) loses at most the fact it was
tracing. A last line without its newline or that does not parse is cut away
when the sweep resumes, and that fact is redone. A bad line anywhere else is an
error: the file was edited, not interrupted.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from dataclasses import dataclass, field

from ..errors import InputError
from ..guards import parse_codes, warning_code, warning_dict
from ..inputs.facts import DEFAULT_FILTER, LEGACY_FILTER, Fact, check_filter
from ..render.export import finite_or_null
from ..settings import TraceSettings
from ..types import TraceRequest, TraceResult
from ..userfiles import check_stat, read_user_file

MODES = ("noise", "substitution")  # known_1000 facts / prompt pairs

FORMAT_VERSION = 1
SKIP_WRONG = "wrong-prediction"  # the clean top token fails the fact filter (tracer.inputs.facts)
SKIP_INPUT = "bad-input"  # subject not in the prompt, empty attribute, prompt too long, ...
SKIP_FLAGGED = "flagged"  # traced, but its trace carries a warning named by --skip-flagged ("flagged:CODE")
SKIP_REASONS = {SKIP_WRONG: "the model predicts another token", SKIP_INPUT: "unusable prompt, subject or attribute"}


def skip_reason_text(reason: str) -> str:
    """What a skip reason means, in words ("flagged:small-total-effect" included)."""
    if reason.startswith(SKIP_FLAGGED + ":"):
        return f"traced, but its trace is flagged {reason.split(':', 1)[1]}: left out by --skip-flagged"
    return SKIP_REASONS.get(reason, reason)


# ---- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepConfig(TraceSettings):
    """Everything that changes a fact's numbers; stored in every line, compared on resume.
    The trace settings (TraceSettings' fields, keyword-only, validated there) plus the model
    and the fact filter, and the corruption (`mode`: "noise" for known_1000 facts,
    "substitution" for prompt pairs; set from the facts, see with_mode). The sweep traces
    every position (the paper's token x layer grids)."""

    model: str | None = None  # the loaded model's name; None until the model is loaded
    filter: str = DEFAULT_FILTER  # which facts are traced (tracer.inputs.facts.FILTERS)
    mode: str = "noise"  # MODES
    # warning codes (tracer.guards) whose facts are written as skipped ("flagged:CODE") and so left out
    # of the report; () (the default, as ROME): every known fact counts
    skip_flagged: tuple[str, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        check_filter(self.filter)
        object.__setattr__(self, "skip_flagged", parse_codes(self.skip_flagged))
        if self.mode not in MODES:
            raise InputError(f"unknown sweep mode {self.mode!r}: choose {' or '.join(MODES)}")

    def to_dict(self) -> dict:
        return {"model": self.model, **super().to_dict(), "filter": self.filter, "mode": self.mode,
                **({"skip_flagged": list(self.skip_flagged)} if self.skip_flagged else {})}  # none: as before

    def flagged(self, warnings):
        """The first of `warnings` whose code is in skip_flagged, or None."""
        return next((w for w in warnings if warning_code(w) in self.skip_flagged), None)

    def with_mode(self, facts: list[Fact]) -> "SweepConfig":
        """This config with the mode of `facts` (all of one mode: tracer.inputs.facts.load_facts)."""
        mode = facts[0].mode if facts else self.mode
        return self if mode == self.mode else dataclasses.replace(self, mode=mode)

    def request(self, fact: Fact) -> TraceRequest:
        if fact.corrupted_prompt is not None:  # a pair: its target, or the clean argmax
            return TraceRequest(fact.prompt, fact.subject, corrupted_prompt=fact.corrupted_prompt, target=fact.target,
                                corrupted_subject=fact.corrupted_subject, positions="all", **self.as_kwargs())
        # ROME traces the clean argmax (None); under first-token that argmax is the
        # attribute's first token, named as before
        target = fact.attribute if self.filter == "first-token" else None
        return TraceRequest(fact.prompt, fact.subject, target=target, positions="all", **self.as_kwargs())


_FLAG = {"mode": "the corruption", "kinds": "--kinds", "samples": "--samples", "noise": "--noise", "replace": "--replace",
         "window": "--window", "seed": "--seed", "sever": "--sever", "filter": "--filter", "model": "--model",
         "skip_flagged": "--skip-flagged"}


def stored_config(config: dict) -> dict:
    """A line's config with the defaults of older lines filled in (no "filter": first-token;
    no "replace"/"sever": off). Lines from before the noise rules hold a number k (k x the
    embedding std, drawn with NumPy's default_rng): named so, they never match a rule.
    No "mode": noise (known_1000 facts). No "skip_flagged": none."""
    filled = {"replace": False, "sever": [], "mode": "noise", "skip_flagged": [], **config, "filter": config.get("filter") or LEGACY_FILTER}
    noise = filled.get("noise")
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        filled["noise"] = f"{noise:g} x embedding std with default_rng draws (before ROME's noise rules)"
    return filled


def _show(value) -> str:
    return (",".join(str(v) for v in value) or "none") if isinstance(value, list) else str(value)


def first_difference(a: dict, b: dict, *, check_model: bool = True) -> tuple[str, str, str] | None:
    """(flag, a's value, b's value) of the first setting in which two lines' configs (or a
    line's and a run's, SweepConfig.to_dict) differ, older lines' defaults filled in
    (stored_config); None when they agree. The one comparison behind resuming a sweep and
    reporting one."""
    a, b = stored_config(a), stored_config(b)
    for key, flag in _FLAG.items():
        if key == "model" and not check_model:
            continue
        if a.get(key) != b.get(key):
            return flag, _show(a.get(key)), _show(b.get(key))
    return None


def config_mismatch(stored: dict, config: SweepConfig, *, check_model: bool = True) -> str | None:
    """A short phrase naming the first setting that differs, or None when they agree."""
    diff = first_difference(stored, config.to_dict(), check_model=check_model and config.model is not None)
    if diff is None:
        return None
    flag, a, b = diff
    return f"{flag} {a} (this run: {b})"


# ---- the results file ---------------------------------------------------------------------


@dataclass
class ResultsState:
    """What an existing results file holds, as far as resuming needs."""

    path: str
    records: dict = field(default_factory=dict)  # known_id -> {"status", "prompt", "subject", "skipped"}
    config: dict | None = None
    good_bytes: int = 0  # the file's length up to the end of its last good line
    dropped_tail: int = 0  # bytes of a partial or corrupt last line (to be cut away)

    @property
    def kept(self) -> int:
        return sum(1 for r in self.records.values() if r["status"] == "kept")

    @property
    def skipped(self) -> int:
        return sum(1 for r in self.records.values() if r["status"] == "skipped")


def parse_line(raw: bytes) -> dict | None:
    """A results line as its record, or None when it is not one: the one rule of validity that
    resuming a sweep, reporting it and following it in the app all apply."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(obj, dict) or obj.get("status") not in ("kept", "skipped") or "known_id" not in obj:
        return None
    if not isinstance(obj.get("config"), dict):
        return None
    if isinstance(obj["known_id"], bool) or not isinstance(obj["known_id"], (int, str)):
        return None
    for key in ("kinds", "sever"):  # the report reads them as lists of names
        value = obj["config"].get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(k, str) for k in value)):
            return None
    return obj


def line_segments(data: bytes) -> list[tuple[int, bytes, bool]]:
    """(byte offset, bytes, ends with a newline) of each non-blank line of a results file."""
    segments, offset = [], 0
    for raw in data.split(b"\n"):
        if raw.strip():
            segments.append((offset, raw, offset + len(raw) < len(data)))
        offset += len(raw) + 1
    return segments


def scan_results(path: str) -> ResultsState:
    """Read an existing results file (a missing or empty one is a fresh start).

    A partial or unparsable LAST line is reported in `dropped_tail` (an
    interrupted write); a bad line anywhere else, or lines written with
    different settings, raise InputError."""
    state = ResultsState(path)
    if not os.path.lexists(path):
        return state
    data = read_user_file(path, "output")
    segments = line_segments(data)
    for i, (start, raw, complete) in enumerate(segments):
        obj = parse_line(raw) if complete else None
        if obj is None:
            if i == len(segments) - 1:  # a torn or garbled last line: cut away, redo that fact
                state.dropped_tail = len(data) - start
                state.good_bytes = start
                return state
            line_no = data.count(b"\n", 0, start) + 1
            raise InputError(f"{path} line {line_no} is not a sweep result line; fix or remove it, or choose another --output")
        if obj.get("v") != FORMAT_VERSION:
            line_no = data.count(b"\n", 0, start) + 1
            raise InputError(f"{path} line {line_no} has format version {obj.get('v')!r}; this tracer-tui writes version {FORMAT_VERSION}")
        line_config = stored_config(obj["config"])
        if state.config is None:
            state.config = line_config
        elif line_config != state.config:
            line_no = data.count(b"\n", 0, start) + 1
            raise InputError(f"{path} mixes results of different settings (line {line_no}); use one file per setting")
        state.records[obj["known_id"]] = {
            "status": obj["status"],
            "prompt": obj.get("prompt"),
            "subject": obj.get("subject"),
            "corrupted_prompt": obj.get("corrupted_prompt"),
            "skipped": obj.get("skipped"),
        }
    state.good_bytes = len(data)
    return state


def dump_line(record: dict) -> str:
    """One results line: strict JSON (no NaN/Infinity: the caller turns a non-finite value into
    null), UTF-8 text; a string with a lone surrogate (a facts file may hold "\\ud800") is
    written \\u-escaped, so the line is still valid UTF-8 and reads back as the same string."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text


class ResultsWriter:
    """Appends whole lines durably; holds an exclusive lock so two sweeps never share a file."""

    def __init__(self, path: str, state: ResultsState):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise InputError(f"output {path} is a directory") from None
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not on POSIX: no lock
            pass
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"{path} is being written by another sweep") from None
            raise InputError(f"cannot lock {path}: {exc.strerror or exc}") from None
        if state.dropped_tail:
            os.ftruncate(self.fd, state.good_bytes)
            os.fsync(self.fd)

    def append(self, record: dict) -> None:
        line = (dump_line(record) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:  # one write in practice; a short write continues the same line
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def append_lines(self, lines: list[bytes]) -> None:
        """Append already-encoded lines (each ending in a newline) with one fsync at the end:
        the merge of a distributed sweep's part files."""
        view = memoryview(b"".join(lines))
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def prepare_output(path: str, facts: list[Fact], config: SweepConfig) -> ResultsState:
    """Scan `path` and check it fits this sweep (settings, the facts' mode, same facts); before
    loading the model."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {path}: directory {parent} does not exist")
    state = scan_results(path)
    config = config.with_mode(facts)
    if state.config is not None:
        diff = config_mismatch(state.config, config)
        if diff:
            raise InputError(f"{path} was written with {diff}; use the same settings to resume, or another --output")
    by_id = {f.known_id: f for f in facts}
    for known_id, rec in state.records.items():
        fact = by_id.get(known_id)
        if fact is not None and (rec["prompt"] != fact.prompt or rec["subject"] != fact.subject
                                 or rec.get("corrupted_prompt") != fact.corrupted_prompt):
            raise InputError(
                f"{path} holds known_id {known_id!r} for a different fact ({rec['prompt']!r}); "
                "is this the same facts file? choose another --output"
            )
    return state


@dataclass
class Check:
    """Does the model predict the fact? (one clean forward)"""

    ok: bool
    reason: str | None = None  # SKIP_WRONG or SKIP_INPUT when not ok
    detail: str = ""
    target_id: int | None = None
    target: str | None = None
    top: tuple[int, str, float] | None = None  # (id, text, prob) of the clean top token
    target_prob: float | None = None
    rules: dict[str, bool] | None = None  # the verdict of every filter rule (tracer.inputs.facts.FILTERS)


# ---- result lines ---------------------------------------------------------------------------


def _top_list(preds) -> list:
    return [[p.token_id, p.text, p.prob] for p in preds]


def _fact_fields(fact: Fact, config: SweepConfig, status: str) -> dict:
    """What every line holds, kept or skipped: the format, the fact and the settings."""
    pair = {} if fact.corrupted_prompt is None else {"corrupted_prompt": fact.corrupted_prompt}
    if fact.corrupted_subject is not None:
        pair["corrupted_subject"] = fact.corrupted_subject
    return {
        "v": FORMAT_VERSION,
        "status": status,
        "known_id": fact.known_id,
        "relation_id": fact.relation_id,
        "prompt": fact.prompt,
        "subject": fact.subject,
        "attribute": fact.target or "" if fact.corrupted_prompt is not None else fact.attribute,
        **pair,
        "config": config.to_dict(),
    }


def kept_record(fact: Fact, config: SweepConfig, result: TraceResult, input_ids: list[int] | None = None) -> dict:
    """The line of a traced fact; a non-finite number (a model with NaN/inf logits) is null."""
    return finite_or_null({
        **_fact_fields(fact, config, "kept"),
        "tokens": list(result.tokens),
        "input_ids": list(input_ids) if input_ids is not None else None,
        "subject_range": list(result.subject_range),
        "target": result.target_text,
        "target_id": result.target_id,
        "clean_prob": result.clean_prob,
        "corrupted_prob": result.corrupted_prob,
        "clean_top": _top_list(result.clean_top),
        "corrupted_top": _top_list(result.corrupted_top),
        "noise_std": result.noise_std,
        "grids": {kind: {"prob": grid["prob"]} for kind, grid in result.grids.items()},
        "seconds": round(result.seconds, 3),
        "warnings": [warning_dict(w) for w in result.warnings],
        **({"alignment": result.alignment} if getattr(result, "alignment", None) is not None else {}),
    })


def skipped_record(fact: Fact, config: SweepConfig, check: Check) -> dict:
    return finite_or_null({
        **_fact_fields(fact, config, "skipped"),
        "skipped": check.reason,
        "detail": check.detail,
        "target": check.target,
        "target_id": check.target_id,
        "top": list(check.top) if check.top else None,
    })


# ---- reading ----------------------------------------------------------------------------


def read_results(path: str) -> tuple[list[dict], list[str]]:
    """Every result line of a sweep file. A torn last line (a sweep still writing, or
    killed) is left out with a warning; a bad line elsewhere is an InputError."""
    data = read_user_file(path, "results file")
    records, warnings = [], []
    segments = line_segments(data)
    for n, (start, raw, complete) in enumerate(segments):
        line_no = data.count(b"\n", 0, start) + 1
        obj = parse_line(raw) if complete else None
        if obj is None:
            if n == len(segments) - 1:
                warnings.append(f"line {line_no} is incomplete (a sweep still running, or interrupted): left out")
                break
            raise InputError(f"{path} line {line_no} is not a sweep result line")
        config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        if not records:
            first_config, first_line = config, line_no
        else:  # one report is one setting: the model and every trace setting must agree
            diff = first_difference(config, first_config, check_model=True)
            if diff is not None:
                flag, here, there = diff
                raise InputError(f"{path}: line {line_no} was written with {flag} {here} "
                                 f"(line {first_line}: {flag} {there}): report each setting separately")
        records.append(obj)
    return records, warnings


class ResultsTail:
    """Follows a results file that a sweep may still be appending to: `poll()` returns the
    records of the complete lines added since the last call (reading only the new bytes).
    A file that shrank or was replaced starts over (`reset` is then True)."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.records: list[dict] = []
        self.bad_lines = 0
        self._ident = None

    def poll(self) -> tuple[list[dict], bool]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [], False
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise InputError(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        check_stat(st, self.path, "results file")
        reset = False
        ident = (st.st_dev, st.st_ino)
        if st.st_size < self.offset or (self._ident is not None and ident != self._ident):
            self.offset, self.records, self.bad_lines, reset = 0, [], 0, True
        self._ident = ident
        if st.st_size == self.offset:
            return [], reset
        data = read_user_file(self.path, "results file", offset=self.offset)
        end = data.rfind(b"\n") + 1  # only complete lines; a torn one waits for its newline
        new = []
        for _, raw, _ in line_segments(data[:end]):
            obj = parse_line(raw)
            if obj is not None:
                new.append(obj)
            else:
                self.bad_lines += 1
        self.offset += end
        self.records += new
        return new, reset
