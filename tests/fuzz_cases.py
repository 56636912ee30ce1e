"""Generated hostile inputs for the Python API, the app's settings file and the results file (issue 25).

`run_fuzz(n, seed, model, workdir)` draws `n` cases from a seeded random.Random and runs each under a
per-case time limit (SIGALRM). A case ends in a result or an error of the project's own types
(tracer.errors.TracerError); anything else is a traceback, a case over the limit a hang. The suite
(tests/test_fuzz_api_files.py) runs 2,400; benchmarks/fuzz.py runs 10,000 and prints the counts.

Most cases fail validation early (a wrong type, an unknown setting, a bad file), so thousands run in
seconds on the tiny random models of tests/tiny.py; a few are valid and really trace (1-2 samples).
No case names a Hugging Face repo id (a string with one '/' that is not a path): nothing touches the
network.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tracer
from tracer.errors import TracerError

WORDS = ["The", " Eiffel", " Tower", "is", "in", "Paris", "city", "of", "a", " "]
HOSTILE = ["\ud800", "\x00", "\x1b[31m", "\r", "\x7f", "\x85", "\u202e", "\n", "{}", "%s", "é", "🙂", "\ufeff",
           "\\", '"', "null", "NaN"]
KEYS = ["kinds", "samples", "noise", "replace", "window", "seed", "sever", "positions", "target",
        "corrupted_prompt", "corrupted_subject", "top_k", "bogus", "filter", "skip_flagged"]
GOOD = {"kinds": [("hidden",), "mlp", "attn,hidden"], "samples": [1, 2], "noise": ["s3", "0.1", "u3"],
        "replace": [False, True], "window": [1, 2, 3], "seed": [0, 1, 7], "positions": ["all", "whole", "subject-last",
        "last", "0-1", [0, 1], "-1"], "top_k": [1, 3], "skip_flagged": ["none", "flagged", "weak-target"]}
CATEGORIES = ("api", "settings", "results")


def junk(rng: random.Random, depth: int = 0):
    """Any value a caller might pass by mistake."""
    r = rng.random()
    if r < 0.15:
        return rng.choice([None, True, False, 0, -1, 1, 2**70, -(2**70), 3.5, math.nan, math.inf, -0.0])
    if r < 0.45:
        return text(rng)
    if r < 0.55:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
    if r < 0.7 and depth < 2:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.8 and depth < 2:
        return {text(rng, 6): junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if r < 0.85 and depth < 2:
        return tuple(junk(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    if r < 0.9:
        return object()
    return rng.choice(["", " ", "all", "whole", "hidden", "mlp", "s3", "flagged", "-1", "0-4", "rome", "per-fact"])


def text(rng: random.Random, max_len: int = 30) -> str:
    """A short string of words, hostile characters and random code points (lone surrogates included)."""
    if rng.random() < 0.02:
        return rng.choice(WORDS) * rng.randint(500, 3000)  # long
    parts = []
    for _ in range(rng.randint(0, max_len // 4 + 1)):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(WORDS))
        elif r < 0.75:
            parts.append(rng.choice(HOSTILE))
        else:
            parts.append(chr(rng.choice([rng.randint(1, 0x7f), rng.randint(0x80, 0x2fff), rng.randint(0xd800, 0xdfff)])))
    return "".join(parts)


def settings(rng: random.Random, valid: bool) -> dict:
    """Keyword settings: all valid (a real, short trace), or a few of any kind."""
    if valid:
        return {"kinds": ("hidden",), "samples": rng.choice([1, 2]), "window": rng.choice([1, 2]),
                "seed": rng.randint(0, 5), "noise": rng.choice(GOOD["noise"])}
    out = {}
    for key in rng.sample(KEYS, rng.randint(1, 4)):
        out[key] = rng.choice(GOOD[key]) if key in GOOD and rng.random() < 0.5 else junk(rng)
    if all(k in GOOD and out[k] in GOOD[k] for k in out):  # make sure it fails early: one bad value
        out[rng.choice(["samples", "window", "kinds", "bogus"])] = rng.choice([0, -3, 10**9, "x", None, (), "nope"])
    return out


# ---- files -------------------------------------------------------------------------------------


def special_path(rng: random.Random, ctx) -> str:
    """A path that is not an ordinary file, or no file at all."""
    return rng.choice([ctx.fifo, "/dev/zero", "/dev/null", str(ctx.work), str(ctx.work / "missing" / "x.jsonl"),
                       "/proc/self/mem", str(ctx.work / "a\x00b")])


def results_line(rng: random.Random) -> bytes:
    """One line of a results file: a plausible record with a damaged field, or garbage."""
    r = rng.random()
    if r < 0.2:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    record = {"v": rng.choice([1, 1, 1, 2, "1", None]), "status": rng.choice(["kept", "kept", "skipped", "x", None]),
              "known_id": rng.choice([0, 1, 2, "a", None, [], 1.5]),
              "config": rng.choice([{"model": "m", "kinds": ["mlp"], "samples": 2, "noise": "s3", "window": 2, "seed": 1},
                                    {"model": rng.choice(["m", "n"]), "kinds": junk(rng)}, junk(rng)]),
              "prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "attribute": "Paris",
              "tokens": ["The", " Eiffel", " Tower", " is", " in"], "subject_range": [1, 3], "target": " Paris",
              "clean_prob": 0.5, "corrupted_prob": 0.1,
              "grids": {"mlp": {"prob": [[0.1, 0.2, 0.3]] * 5}}, "warnings": []}
    for key in rng.sample(sorted(record), rng.randint(0, 3)):  # damage a few fields
        if rng.random() < 0.3:
            del record[key]
        else:
            record[key] = junk(rng)
    try:
        line = json.dumps(record, default=repr)
    except (ValueError, TypeError):
        line = "{"
    if rng.random() < 0.1:
        line = line[: rng.randint(0, len(line))]
    return line.encode("utf-8", "surrogatepass")


def facts_file(rng: random.Random, ctx) -> str:
    """A facts file of random content (mostly unusable), or a special path."""
    if rng.random() < 0.2:
        return special_path(rng, ctx)
    ext = rng.choice([".json", ".jsonl", ".csv", ""])
    path = ctx.work / f"facts-{ctx.counter}{ext}"
    ctx.counter += 1
    r = rng.random()
    if r < 0.3:
        body = b"prompt,subject," + rng.choice([b"prompt", b"target", b"corrupted_prompt"]) + b"\n" + text(rng).encode(
            "utf-8", "surrogatepass")
    elif r < 0.6:
        body = json.dumps([junk(rng) for _ in range(rng.randint(0, 3))], default=repr).encode()
    else:
        body = b"\n".join(results_line(rng) for _ in range(rng.randint(0, 3)))
    path.write_bytes(body)
    return str(path)


# ---- the three targets -----------------------------------------------------------------------------


def api_case(rng: random.Random, ctx) -> None:
    """One call of the Python API with arguments drawn from `junk`, good values and special paths."""
    model = ctx.model if rng.random() < 0.85 else junk(rng)
    valid = rng.random() < 0.04
    prompt = rng.choice(["The Eiffel Tower is located in", "The Louvre Museum is in"]) if valid else (
        junk(rng) if rng.random() < 0.5 else text(rng))
    subject = ("Eiffel Tower" if "Eiffel" in prompt else "Louvre") if valid and isinstance(prompt, str) else (
        junk(rng) if rng.random() < 0.5 else text(rng, 8))
    call = rng.choice(["load", "predict", "trace", "trace", "trace", "patch", "patch", "inspect", "report", "sweep",
                       "robustness"])
    if call == "load":
        spec = rng.choice([junk(rng), special_path(rng, ctx), "/" + text(rng, 10), str(ctx.bad_model)])
        if spec is None or (isinstance(spec, str) and spec.count("/") == 1 and not spec.startswith(("/", ".", "~"))):
            spec = "/" + str(spec)  # never the embedded model (slow) nor an HF repo id (network)
        tracer.load(spec)
    elif call == "predict":
        tracer.predict(model, prompt, k=rng.choice([1, 3, 0, -1, "2", None, 2.0, 10**12]))
    elif call == "trace":
        tracer.trace(model, prompt, subject, **settings(rng, valid))
    elif call == "patch":
        extra = settings(rng, valid)
        for key in ("kinds", "window", "positions", "corrupted_prompt"):  # patch's own arguments
            extra.pop(key, None)
        tracer.patch(model, prompt, rng.choice([None, None, junk(rng), "The Colosseum is located in"]),
                     kind=rng.choice(["mlp", "hidden", "attn", junk(rng)]),
                     layers=rng.choice([[1], 0, [0, 2], junk(rng), [99], (), "1"]),
                     positions=rng.choice(GOOD["positions"][1:] + [junk(rng)]), subject=subject, **extra)
    elif call == "inspect":
        tracer.inspect(model, junk(rng), rng.choice(["mlp", junk(rng)]), rng.choice([1, junk(rng)]))
    elif call == "report":
        tracer.report(rng.choice([junk(rng), special_path(rng, ctx), facts_file(rng, ctx)]),
                      aggregate=rng.choice(["rome", "per-fact", junk(rng)]))
    elif call == "sweep":
        tracer.sweep(model, facts=rng.choice([facts_file(rng, ctx), junk(rng)]),
                     output=rng.choice([str(ctx.work / f"out-{ctx.counter}.jsonl"), special_path(rng, ctx), junk(rng)]),
                     limit=rng.choice([1, 0, None, "1", -2]), **settings(rng, False))
    else:
        tracer.robustness(model, prompt, subject, **settings(rng, False))


def settings_case(rng: random.Random, ctx) -> None:
    """The app's settings file with random content: read as (settings, warning), never an exception."""
    from tui.config import config_path, load_config, saved_settings

    path = config_path()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    r = rng.random()
    if r < 0.03:
        os.mkfifo(path)
    elif r < 0.3:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))))
    else:
        data = {k: junk(rng) if rng.random() < 0.7 else v for k, v in
                {"theme": "dark", "export_dir": "exports", "launched": True,
                 "trace": {"samples": 4, "kinds": ["mlp"], "noise": "s3"}}.items() if rng.random() < 0.8}
        if rng.random() < 0.5:
            data["trace"] = {k: junk(rng) for k in rng.sample(KEYS, 3)}
        path.write_text(json.dumps(data if rng.random() < 0.9 else junk(rng), default=repr), encoding="utf-8",
                        errors="surrogatepass")
    data, warning = load_config()
    assert isinstance(data, dict) and (warning is None or isinstance(warning, str))
    settings_, warning = saved_settings(data)
    assert warning is None or isinstance(warning, str)
    theme = data.get("theme")
    assert theme is None or isinstance(theme, str)  # what the app hashes (tui.app._setup_themes)
    if rng.random() < 0.02:  # the app itself, built on this file: it must come up
        ctx.build_app()


def results_case(rng: random.Random, ctx) -> None:
    """A results file of random lines, read by the report, the resume scan and the app's follower."""
    from tracer.sweeps.aggregate import load_report
    from tracer.sweeps.results import ResultsTail, scan_results

    if rng.random() < 0.1:
        path = special_path(rng, ctx)
    else:
        path = str(ctx.work / f"results-{ctx.counter}.jsonl")
        ctx.counter += 1
        Path(path).write_bytes(b"\n".join(results_line(rng) for _ in range(rng.randint(0, 4))) + rng.choice([b"", b"\n"]))
    reader = rng.choice(["report", "scan", "tail"])
    if reader == "report":
        load_report(path, rng.choice(["rome", "per-fact"]))
    elif reader == "scan":
        scan_results(path)
    else:
        ResultsTail(path).poll()


TARGETS = {"api": api_case, "settings": settings_case, "results": results_case}


# ---- running ---------------------------------------------------------------------------------------


@dataclass
class FuzzContext:
    model: object  # a tracer.core.tracing.Tracer on a tiny model
    work: Path  # a scratch folder
    fifo: str  # a named pipe with no writer
    bad_model: Path  # a model folder whose config.json has vocab_size 0
    counter: int = 0
    app_builds: int = 0

    def build_app(self) -> None:
        from tui.app import make_app

        class _Engine:  # the app only reads model_spec before it runs
            model_spec = None

        make_app(engine=_Engine())
        self.app_builds += 1


@dataclass
class FuzzOutcome:
    cases: Counter = field(default_factory=Counter)  # per category
    errors: Counter = field(default_factory=Counter)  # TracerError subclass names
    results: int = 0
    results_by: Counter = field(default_factory=Counter)  # per category: cases that returned normally
    tracebacks: list = field(default_factory=list)  # (category, index, "Type: message at file:line")
    hangs: list = field(default_factory=list)
    seconds: float = 0.0
    slowest: float = 0.0
    slowest_case: tuple = ()  # (category, index) of the slowest case

    @property
    def total(self) -> int:
        return sum(self.cases.values())


class _Hang(BaseException):
    """Raised by the alarm inside a case that runs past its limit (a BaseException: nothing catches it)."""


def _alarm(signum, frame):
    raise _Hang()


def run_fuzz(n: int, seed: int, ctx: FuzzContext, *, per_case_s: float = 10.0, weights=(0.5, 0.25, 0.25)) -> FuzzOutcome:
    """Run `n` generated cases; returns what happened to them.

    Args:
        n: how many cases.
        seed: the random.Random seed (the same seed gives the same cases).
        ctx: the model, scratch folder and special files (make_context).
        per_case_s: a case running longer is a hang.
        weights: the share of API, settings-file and results-file cases.

    Returns:
        A FuzzOutcome: cases per category, errors by type, results, tracebacks and hangs.
    """
    rng = random.Random(seed)
    out = FuzzOutcome()
    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    try:
        for i in range(n):
            category = rng.choices(CATEGORIES, weights)[0]
            case_rng = random.Random(rng.getrandbits(64))
            out.cases[category] += 1
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, per_case_s)
            try:
                TARGETS[category](case_rng, ctx)
                out.results += 1
                out.results_by[category] += 1
            except TracerError as exc:
                out.errors[type(exc).__name__] += 1
            except _Hang:
                out.hangs.append((category, i))
            except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                out.tracebacks.append((category, i, f"{type(exc).__name__}: {str(exc)[:120]} at "
                                       f"{os.path.basename(frame.filename)}:{frame.lineno}"))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if time.perf_counter() - t0 > out.slowest:
                out.slowest, out.slowest_case = time.perf_counter() - t0, (category, i)
    finally:
        signal.signal(signal.SIGALRM, previous)
    out.seconds = time.perf_counter() - started
    return out


def make_context(model, work: Path) -> FuzzContext:
    """The scratch folder with a named pipe and a broken model folder, around a loaded model; the
    app's settings folder is $TRACER_TUI_CONFIG_DIR (set to <work>/config when unset)."""
    work.mkdir(parents=True, exist_ok=True)
    fifo = work / "pipe"
    if not fifo.exists():
        os.mkfifo(fifo)
    bad = work / "bad-model"
    bad.mkdir(exist_ok=True)
    (bad / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 0}))
    os.environ.setdefault("TRACER_TUI_CONFIG_DIR", str(work / "config"))
    Path(os.environ["TRACER_TUI_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    return FuzzContext(model=model, work=work, fifo=str(fifo), bad_model=bad)
