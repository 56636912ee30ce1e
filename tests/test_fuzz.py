"""Hostile input, generated: the CLI's `trace`, the Python API, the facts loader and the results
reader get ~200 cases from a seeded random.Random (no Hypothesis: not a dependency). Each case
must end in a result or one clear error: exit code 0 or 2 with exactly one 'tracer-tui: error:'
line on 2 (API: a result or a TracerError), strict JSON wherever JSON is written, no raw control
character in text output, and the whole file well under 30 s."""

from __future__ import annotations

import json
import random
import time

import tracer
from tracer.cli import run_cli
from tracer.errors import TracerError

import pytest

SEED = 14
N_CLI, N_API, N_FACTS, N_RESULTS = 80, 40, 40, 40  # 200 cases in all
PREFIX = "tracer-tui: error: "
WORDS = ["The", " Eiffel", " Tower", "is", "in", "Paris", "city", "of", "a", "b", " "]
HOSTILE = ["\ud800", "\udcff", "\x00", "\x1b[31m", "\r", "\x07", "\x7f", "\x85", "\u202e", "\n", "\t", "{}", "{x}",
           "{0.__class__}", "%s", "é", "🙂", "\ufeff", "\uffff", "\\", '"', "null", "NaN", "Infinity"]
NUMBERS = ["0", "1", "2", "-1", "3", "1e3", "nan", "inf", "-inf", "", " ", "abc", "1.5", "10001",
           "99999999999999999999", "0x10", "+2", " 2 ", "٣", "4294967296", "-0"]


def hostile_text(rng: random.Random, max_len: int = 40) -> str:
    choice = rng.random()
    if choice < 0.05:
        return rng.choice(WORDS) * rng.randint(2000, 20000)  # very long
    if choice < 0.1:
        return ""
    parts = []
    for _ in range(rng.randint(1, max_len // 4 + 1)):
        r = rng.random()
        if r < 0.4:
            parts.append(rng.choice(WORDS))
        elif r < 0.7:
            parts.append(rng.choice(HOSTILE))
        else:
            parts.append(chr(rng.choice([rng.randint(0, 0x7f), rng.randint(0x80, 0x2fff), rng.randint(0xd800, 0xdfff),
                                         rng.randint(0xe000, 0x10ffff)])))
    return "".join(parts)


def prompt_and_subject(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.4:  # a usable prompt with a little spice: these traces run to the end
        words = [rng.choice(WORDS[:9]) for _ in range(rng.randint(2, 8))]
        i = rng.randrange(len(words))
        words[i] = words[i] + rng.choice(HOSTILE[2:10] + [""])
        return " ".join(words), words[i].strip() or words[i]
    prompt = hostile_text(rng)
    if prompt and rng.random() < 0.6:  # often a subject that is really in the prompt
        a = rng.randrange(len(prompt))
        return prompt, prompt[a : a + rng.randint(1, 6)]
    return prompt, hostile_text(rng, 12)


def strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def raw_controls(text: str) -> list[str]:
    return [c for c in text if c not in "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)]


@pytest.fixture(scope="module")
def cached_model(tiny_model_dir):
    from tracer.models.load import load_model

    return load_model(str(tiny_model_dir))


def test_fuzz_cli_trace(capsys, monkeypatch, tiny_model_dir, cached_model):
    import tracer.api

    monkeypatch.setattr(tracer.api, "load_model", lambda *a, **k: cached_model)  # load once (the CLI loads through tracer.load)
    rng = random.Random(SEED)
    codes = {0: 0, 2: 0}
    started = time.monotonic()
    for case in range(N_CLI):
        prompt, subject = prompt_and_subject(rng)
        argv = ["trace", "--model", str(tiny_model_dir), "--prompt", prompt, "--subject", subject,
                "--kinds", rng.choice(["mlp", "attn", "hidden", "mlp,attn"] * 3 + ["bogus", "", ",", "MLP"]),
                "--samples", rng.choice(["1", "2"] * 12 + NUMBERS), "--window", rng.choice(["1", "3"] * 12 + NUMBERS),
                "--format", rng.choice(["json", "text", "csv"])]
        for flag, values in [("--seed", NUMBERS), ("--noise", ["s3", "0.1", "u0.5", "t3", "v1", "s-1", "nan", "inf", "x"]),
                             ("--positions", ["all", "subject-last", "0", "-1", "0,1", "99", "a", "", "1,,2"]),
                             ("--target", None), ("--corrupted-prompt", None), ("--sever", ["mlp", "attn", "x"]),
                             ("--metric", ["prob", "recovery", "logit_diff"])]:
            if rng.random() < 0.15:
                argv += [flag, rng.choice(values) if values else hostile_text(rng, 12)]
        if rng.random() < 0.1:
            argv.append("--replace")
        code = run_cli(argv)
        out, err = capsys.readouterr()
        where = f"case {case}: {argv!r}"
        assert code in (0, 2), where + err
        assert "Traceback" not in err, where + err
        codes[code] += 1
        if code == 2:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(PREFIX), where + err
            assert out == "", where
        elif "--format" in argv and argv[argv.index("--format") + 1] == "json":
            strict_loads(out)
        elif argv[argv.index("--format") + 1] == "text":
            assert raw_controls(out) == [], where
    assert codes[0] >= 5 and codes[2] >= 20, codes  # both outcomes really exercised
    assert time.monotonic() - started < 25


def test_fuzz_api_trace(tiny_model_dir):
    model = tracer.load(str(tiny_model_dir))
    rng = random.Random(SEED + 1)
    values = [0, 1, 2, -1, 2**40, 1.5, float("nan"), float("inf"), True, None, "", "1", "mlp", ["mlp"], ("attn",),
              [1], {"a": 1}, b"mlp", object()]
    ok = failed = 0
    for case in range(N_API):
        prompt, subject = prompt_and_subject(rng)
        kwargs = {"samples": 1, "window": 2, "kinds": ("mlp",)}
        for name in ("kinds", "samples", "noise", "replace", "window", "seed", "sever", "positions", "target",
                     "corrupted_prompt"):
            if rng.random() < 0.25:
                kwargs[name] = rng.choice(values + [hostile_text(rng, 8)])
        if rng.random() < 0.1:
            prompt = rng.choice(values)
        try:
            result = tracer.trace(model, prompt, subject, **kwargs)
        except TracerError as exc:
            assert str(exc) and "\n" not in str(exc), f"case {case}: {exc!r}"
            failed += 1
            continue
        strict_loads(tracer.render.export.dumps(result.to_dict()))
        ok += 1
    assert ok >= 1 and failed >= 10, (ok, failed)


def random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth < 3 and r < 0.25:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and r < 0.5:
        return {rng.choice(["known_id", "subject", "attribute", "prompt", "template", "status", "config", "v",
                            "grids", "tokens", "subject_range", "clean_prob", hostile_text(rng, 6)]): random_json(rng, depth + 1)
                for _ in range(rng.randint(0, 6))}
    return rng.choice([None, True, 0, -1, 1.5, 2**70, "", "x", hostile_text(rng, 8), "{}", "{} is in", [], {}])


def test_fuzz_facts_loader(tmp_path):
    from tracer.inputs.facts_file import load_facts

    rng = random.Random(SEED + 2)
    good = bad = 0
    for case in range(N_FACTS):
        facts = [random_json(rng) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.5:  # mostly well-formed facts with hostile values
            facts = [{"known_id": rng.choice([i, str(i), hostile_text(rng, 4)]), "subject": hostile_text(rng, 8),
                      "attribute": hostile_text(rng, 8),
                      **({"template": rng.choice(["{} is in", "{} {x}", "{0}", "{}{}", hostile_text(rng, 8)])}
                         if rng.random() < 0.5 else {"prompt": hostile_text(rng)})} for i in range(rng.randint(1, 3))]
        path = tmp_path / f"facts{case}.json"
        text = json.dumps(facts if rng.random() < 0.9 else random_json(rng))
        path.write_bytes(text.encode("utf-8") if rng.random() < 0.9 else text.encode("utf-8")[: rng.randint(0, 20)] + b"\xff")
        try:
            loaded = load_facts(str(path))
        except TracerError as exc:
            assert "\n" not in str(exc), f"case {case}: {exc!r}"
            bad += 1
            continue
        assert all(isinstance(f.prompt, str) and isinstance(f.subject, str) for f in loaded)
        good += 1
    assert good >= 3 and bad >= 3, (good, bad)


def test_fuzz_results_reader(tmp_path):
    from tracer.render.sweep_report import render_json, render_text
    from tracer.settings import TraceSettings
    from tracer.sweeps.aggregate import load_report
    from tracer.sweeps.results import scan_results

    rng = random.Random(SEED + 3)
    config = {"model": "m", **TraceSettings(kinds=("mlp",), samples=1, window=2).to_dict(), "filter": "rome"}
    good = bad = 0
    for case in range(N_RESULTS):
        lines = []
        for i in range(rng.randint(0, 4)):
            r = rng.random()
            if r < 0.5:  # a plausible kept line with hostile values
                T = rng.randint(0, 4)
                lines.append(json.dumps({"v": 1, "status": "kept", "known_id": i, "config": config,
                                         "tokens": [hostile_text(rng, 4) for _ in range(T)],
                                         "subject_range": rng.choice([[0, 1], [1, 0], [0, T], [-1, 2], "x", None]),
                                         "clean_prob": rng.choice([0.5, None, "x", 2]), "corrupted_prob": rng.choice([0.1, None]),
                                         "grids": {"mlp": {"prob": [[rng.choice([0.1, 1e308, -1, None]) for _ in range(rng.randint(0, 6))]
                                                                    for _ in range(T)]}}}))
            elif r < 0.7:
                lines.append(json.dumps({"v": 1, "status": "skipped", "known_id": i, "skipped": "bad-input",
                                         "config": rng.choice([config, {**config, "seed": 2}, None, []])}))
            else:
                lines.append(json.dumps(random_json(rng)) if rng.random() < 0.7 else hostile_text(rng, 20))
        path = tmp_path / f"r{case}.jsonl"
        path.write_text("\n".join(lines) + ("\n" if rng.random() < 0.8 else ""), encoding="utf-8", errors="surrogatepass")
        for read in (lambda p: scan_results(p), lambda p: strict_loads(render_json(load_report(p))),
                     lambda p: raw_controls(render_text(load_report(p), plots=False)) == [] or pytest.fail(p)):
            try:
                read(str(path))
                good += 1
            except TracerError as exc:
                assert "\n" not in str(exc), f"case {case}: {exc!r}"
                bad += 1
    assert good >= 3 and bad >= 3, (good, bad)
