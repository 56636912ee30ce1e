"""Issue 25, item 3: `sweep --skip-flagged CODE,...` writes flagged facts as skipped ("flagged:CODE")
so the report leaves them out and counts them; the default (none) averages every fact, as ROME."""

from __future__ import annotations

import json

from tracer.cli import run_cli
from tracer.errors import InputError
from tracer.guards import LEADING_CODES, parse_codes
from tracer.sweeps.results import SweepConfig

import pytest

FACTS = [
    {"known_id": 1, "subject": "Eiffel Tower", "attribute": "Paris", "prompt": "The Eiffel Tower is located in the city of",
     "relation_id": "P1"},
    {"known_id": 2, "subject": "Louvre Museum", "attribute": "Paris", "prompt": "The Louvre Museum is located in",
     "relation_id": "P1"},
    {"known_id": 3, "subject": "Michael Jordan", "attribute": "basketball", "prompt": "Michael Jordan plays the sport of",
     "relation_id": "P2"},
]


def lines(path) -> dict:
    return {r["known_id"]: r for r in map(json.loads, open(path).read().splitlines())}


def test_parse_codes():
    assert parse_codes("none") == () and parse_codes(None) == () and parse_codes("") == ()
    assert parse_codes("flagged") == tuple(sorted(LEADING_CODES))
    assert parse_codes(" weak-target , small-total-effect,weak-target") == ("small-total-effect", "weak-target")
    with pytest.raises(InputError, match="unknown warning code 'bogus'"):
        parse_codes("weak-target,bogus")
    assert SweepConfig().skip_flagged == () and "skip_flagged" not in SweepConfig().to_dict()
    assert SweepConfig(skip_flagged="weak-target").to_dict()["skip_flagged"] == ["weak-target"]


def test_skip_flagged_sweep_leaves_out_and_counts_flagged_facts(tmp_path, capsys, tiny_model_dir):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(FACTS))
    base = ["sweep", str(facts), "--model", str(tiny_model_dir), "--kinds", "hidden", "--samples", "2",
            "--filter", "none"]
    plain, skipping = tmp_path / "all.jsonl", tmp_path / "skip.jsonl"
    assert run_cli([*base, "-o", str(plain)]) == 0
    assert run_cli([*base, "-o", str(skipping), "--skip-flagged", "flagged"]) == 0
    capsys.readouterr()
    every, some = lines(plain), lines(skipping)
    assert all(r["status"] == "kept" for r in every.values())
    flagged = {}
    for known_id, r in every.items():
        codes = [w["code"] for w in r["warnings"] if w["code"] in LEADING_CODES]
        if codes:
            flagged[known_id] = codes[0]
            assert some[known_id]["status"] == "skipped" and some[known_id]["skipped"] == f"flagged:{codes[0]}"
        else:
            assert some[known_id]["status"] == "kept" and some[known_id]["grids"] == r["grids"]
    assert flagged, "the tiny random model's facts have small total effects"
    assert some[next(iter(flagged))]["config"]["skip_flagged"] == sorted(LEADING_CODES)
    # the report counts what was left out
    assert run_cli(["sweep-report", str(skipping)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    counts = {}
    for code in flagged.values():
        counts[code] = counts.get(code, 0) + 1
    expected = (f"Left out as flagged (--skip-flagged {','.join(sorted(LEADING_CODES))}): {len(flagged)} fact(s) ("
                + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) + ")")
    assert expected in text and f"Facts: {len(FACTS) - len(flagged)} traced, {len(flagged)} skipped" in text
    # resuming with another choice is refused, naming the flag
    assert run_cli([*base, "-o", str(skipping)]) == 2
    assert f"--skip-flagged {','.join(sorted(LEADING_CODES))} (this run: none)" in capsys.readouterr().err
    assert run_cli([*base, "-o", str(tmp_path / "x.jsonl"), "--skip-flagged", "bogus"]) == 2
    assert "unknown warning code 'bogus'" in capsys.readouterr().err
