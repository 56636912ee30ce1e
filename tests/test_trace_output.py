"""The trace's outputs on hand-built results (no engine): positions and kind names as people write
them, the summary against a hand computation, cells without values, noise-mode uncertainty, the
100-column text tables, the layers-down layout, and every CLI option's help and default."""

import argparse
import csv
import io
import json
import re
from pathlib import Path

from tracer.analyses.summary import PartialTrace, sites_line, summarize, thirds
from tracer.cli import build_parser
from tracer.cli.common import help_with_default
from tracer.errors import InputError
from tracer.inputs.positions import parse_positions, resolve_positions
from tracer.render import export, trace_text
from tracer.settings import KIND_ALIASES, TraceSettings, kind_name
from tracer.types import Prediction, TraceRequest, TraceResult

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# ---- positions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, parsed", [
    ("all", "all"), ("whole", "whole"), ("subject", "subject"), ("subject-last", "subject-last"), ("last", "last"),
    (" Subject_Last ", "subject-last"), ("WHOLE", "whole"),
    ("3", (3,)), ("0-4", (0, 1, 2, 3, 4)), ("0,2,5-7", (0, 2, 5, 6, 7)), ("7,0-1,1", (0, 1, 7)),
    ("-1", (-1,)), ("-3--1", (-3, -2, -1)), ("-2,1", (-2, 1)), ("2 - 3", (2, 3)),
    ((4, 1, 4), (1, 4)), ([0, -1], (-1, 0)),
])
def test_parse_positions(text, parsed):
    assert parse_positions(text) == parsed


@pytest.mark.parametrize("text, message", [
    ("", "no positions chosen"), ((), "no positions chosen"), ("x", "'x' is not a position"),
    ("1,,2", "'' is not a position"), ("5-3", "runs backwards (write 3-5)"),
    ("0--1", "both count from the start or both from the end"), ("1.5", "is not a position"),
    ("0-200000", "longer than 100000"), ((1, True), "positions must be"), (3, "positions must be"),
    ("subject-first", "is not a position"),
])
def test_parse_positions_errors(text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_positions(text)


@pytest.mark.parametrize("positions, resolved", [
    ("all", "all"), ("whole", [0, 1, 2, 3, 4, 5]), ("subject", [1, 2, 3]), ("subject-last", [3]), ("last", [5]),
    ("0-2", [0, 1, 2]), ("-3--1", [3, 4, 5]), ("-1,0,5", [0, 5]), ((2, -4), [2]),
])
def test_resolve_positions(positions, resolved):
    assert resolve_positions(positions, (1, 4), 6) == resolved


def test_resolve_positions_out_of_range():
    with pytest.raises(InputError, match=r"position 6 out of range: the prompt has 6 tokens \(0..5, or -6..-1"):
        resolve_positions("4-6", (1, 4), 6)
    with pytest.raises(InputError, match="position -7 out of range"):
        resolve_positions("-7", (1, 4), 6)
    with pytest.raises(InputError, match=r"positions 6\.\.8 out of range"):
        resolve_positions("0-8", (1, 4), 6)
    with pytest.raises(InputError, match="positions -9, 7 out of range"):
        resolve_positions("1,7,-9", (1, 4), 6)


def test_trace_request_parses_positions_and_kind_aliases():
    req = TraceRequest("a b c", "b", positions="0-2", kinds="output,self_attn,ffn", sever="self_attn")
    assert req.positions == (0, 1, 2) and req.kinds == ("hidden", "attn", "mlp") and req.sever == ("attn",)
    assert TraceRequest("a b c", "b", positions="Whole").positions == "whole"
    with pytest.raises(InputError, match="runs backwards"):
        TraceRequest("a b c", "b", positions="2-0")


# ---- kind names -----------------------------------------------------------------------------------


def test_kind_aliases():
    assert {a: kind_name(a) for a in KIND_ALIASES} == {
        "output": "hidden", "resid": "hidden", "residual": "hidden", "block": "hidden",
        "self_attn": "attn", "attention": "attn", "attn_out": "attn", "mlp_out": "mlp", "ffn": "mlp"}
    assert kind_name(" Self-Attn ") == "attn" and kind_name("MLP") == "mlp"
    assert TraceSettings(kinds=["resid", "hidden", "attention"]).kinds == ("hidden", "attn")


def test_unknown_kind_suggests_and_lists_the_aliases():
    with pytest.raises(InputError) as err:
        TraceSettings(kinds="outptu")
    assert str(err.value) == (
        "unknown kind 'outptu' (did you mean 'output', that is hidden?): choose from hidden, mlp, attn "
        "(aliases: output, resid, residual, block = hidden; mlp_out, ffn = mlp; self_attn, attention, attn_out = attn)")
    with pytest.raises(InputError, match=r"unknown kind 'atn' \(did you mean 'attn'\?\)"):
        kind_name("atn")
    with pytest.raises(InputError, match="unknown severed kind 'output': choose from mlp, attn"):
        TraceSettings(sever="output")


# ---- a hand-built result --------------------------------------------------------------------------

TOKENS = ["The", " Eiffel", " Tower", " is", " in"]


def make_result(n_layers=6, *, positions="all", recovery_available=True, noise=True, none_row=None,
                grids=None) -> TraceResult:
    """A TraceResult with known grids: prob[t][l] = 0.1 + 0.01 t + 0.05 (l == 2 + t % 3), p_clean 0.6,
    p_corrupted 0.1, so recovery = 200 (p - 0.1)."""
    req = TraceRequest("The Eiffel Tower is in", "Eiffel Tower", kinds=("hidden", "mlp"), samples=4,
                       positions=positions, top_k=2)
    n_rows = len(TOKENS) if positions == "all" else 1
    if grids is None:
        grids = {}
        for k, kind in enumerate(("hidden", "mlp")):
            prob = [[0.1 + 0.01 * t + 0.05 * (layer == 2 + (t + k) % 3) for layer in range(n_layers)]
                    for t in range(n_rows)]
            grids[kind] = {"prob": prob,
                           "recovery": [[200 * (p - 0.1) if recovery_available else None for p in row] for row in prob],
                           "logit_diff": [[p - 1.0 for p in row] for row in prob]}
            if noise:
                grids[kind] |= {"prob_std": [[0.02] * n_layers for _ in prob],
                                "prob_low": [[p - 0.03 for p in row] for row in prob],
                                "prob_high": [[p + 0.03 for p in row] for row in prob],
                                "logit_diff_std": [[0.5] * n_layers for _ in prob]}
    if none_row is not None:
        for grid in grids.values():
            for m in grid:
                grid[m][none_row] = [None] * n_layers
    return TraceResult(
        model="hand", tokens=list(TOKENS), subject_range=(1, 3), target_id=7, target_text=" Paris",
        clean_prob=0.6, corrupted_prob=0.1,
        clean_top=[Prediction(7, " Paris", 0.6), Prediction(9, " France", 0.1)],
        corrupted_top=[Prediction(3, " London", 0.3), Prediction(7, " Paris", 0.1)],
        corrupted_top_id=3, noise_std=0.35, corruption="noise",
        positions="all" if positions == "all" else [1, 2], request=req, grids=grids, seconds=0.5,
        recovery_available=recovery_available,
        target_tokens=[{"id": 7, "text": " Paris", "clean_prob": 0.6, "corrupted_prob": 0.1}],
    )


def test_summary_against_a_hand_computation():
    result = make_result(n_layers=6)
    s = summarize(result, top=3)
    assert (s["metric"], s["profile"]) == ("recovery", "peak-row")
    assert s["total_effect"] == pytest.approx(0.5)
    # hidden: row t peaks at layer 2 + t % 3 with 200 (0.15 + 0.01 t - 0.1); the largest is t = 4 (layer 3): 18
    hidden = s["grids"]["hidden"]
    assert hidden["peak"] == {"row": 4, "tokens": [4], "token": 4, "text": " in", "layer": 3,
                              "value": pytest.approx(18.0), "prob": pytest.approx(0.19)}
    # the profile is row 4: 8 everywhere but 18 at layer 3
    assert [t["layer"] for t in hidden["top_layers"]] == [3, 0, 1]
    assert [t["value"] for t in hidden["top_layers"]] == pytest.approx([18.0, 8.0, 8.0])
    assert hidden["thirds"] == {"early": {"layers": [0, 1], "mean": pytest.approx(8.0)},
                                "middle": {"layers": [2, 3], "mean": pytest.approx(13.0)},
                                "late": {"layers": [4, 5], "mean": pytest.approx(8.0)}}
    # mlp: row t peaks at layer 2 + (t + 1) % 3; t = 4 -> layer 4
    assert (s["grids"]["mlp"]["peak"]["row"], s["grids"]["mlp"]["peak"]["layer"]) == (4, 4)
    assert s["grids"]["mlp"]["thirds"]["late"]["mean"] == pytest.approx(13.0)


def test_summary_falls_back_to_prob_and_skips_cells_without_values():
    result = make_result(n_layers=6, recovery_available=False, none_row=4)
    s = summarize(result, top=2)
    assert s["metric"] == "prob" and "recovery % is not available" in s["metric_note"]
    peak = s["grids"]["hidden"]["peak"]  # row 4 has no values: the peak is row 3 (0.13 + 0.05 at layer 2)
    assert (peak["row"], peak["layer"], peak["value"]) == (3, 2, pytest.approx(0.18))
    assert s["grids"]["hidden"]["top_layers"][0] == {"layer": 2, "value": pytest.approx(0.18)}


def test_summary_of_restored_positions_and_thirds_of_few_layers():
    result = make_result(n_layers=4, positions="1-2")
    peak = summarize(result)["grids"]["hidden"]["peak"]
    assert (peak["tokens"], peak["token"], peak["text"], peak["layer"]) == ([1, 2], None, " Eiffel+ Tower", 2)
    assert thirds(30)["middle"] == list(range(10, 20)) and thirds(2) == {"early": [], "middle": [0], "late": [1]}


def test_the_headline_names_both_sites_and_leaves_out_trivial_and_noise_cells():
    result = make_result(n_layers=6)
    hidden = result.grids["hidden"]
    # the last token's last layer (trivial: 6 // 6 = 1 layer) restores everything
    hidden["prob"][4][5], hidden["recovery"][4][5] = 0.6, 100.0
    hidden["prob_low"][4][5], hidden["prob_high"][4][5] = 0.57, 0.63
    # a subject cell larger than the others, but its interval holds p_corrupted (0.1): within noise
    hidden["prob"][1][0], hidden["recovery"][1][0] = 0.2, 20.0
    hidden["prob_low"][1][0], hidden["prob_high"][1][0] = 0.05, 0.35
    s = summarize(result)
    g = s["grids"]["hidden"]
    assert (g["peak"]["row"], g["peak"]["layer"]) == (4, 5)  # the plain maximum stays as it was
    # subject rows 1-2: row 1 peaks at layer 3 (0.16), row 2 at layer 4 (0.17 -> 200 * 0.07 = 14 %)
    assert (g["subject_site"]["row"], g["subject_site"]["layer"], g["subject_site"]["value"]) == (2, 4, pytest.approx(14.0))
    # the last token without its trivial layer 5: layer 3, 0.19 -> 18 %
    assert (g["late_site"]["row"], g["late_site"]["layer"], g["late_site"]["value"]) == (4, 3, pytest.approx(18.0))
    assert g["left_out"]["trivial"] == 1 and s["grids"]["mlp"]["left_out"]["trivial"] == 0
    # within noise: rows 0-2 outside their one raised layer (low = p - 0.03 <= 0.1), the raised (1, 0) and row 3's
    # 0.13 - 0.03 only where it rounds to <= 0.1: counted from the grids themselves
    low, high = result.grid("hidden", "prob_low"), result.grid("hidden", "prob_high")
    noise = int(((low <= 0.1) & (0.1 <= high)).sum())
    assert g["left_out"]["within_noise"] == noise and noise >= 15
    head = s["headline"]
    assert (head["subject_site"]["kind"], head["subject_site"]["row"]) == ("hidden", 2)  # mlp ties at 14 %: first
    assert (head["late_site"]["kind"], head["late_site"]["layer"]) == ("hidden", 3)
    assert head["text"].startswith("subject site: hidden layer 4 at ␣Tower (14.0) · late site: hidden layer 3 at ␣in (18.0)")
    assert "1 trivial (hidden, last token, last 1 layers)" in head["text"]
    # the CLI's text and the JSON say the same
    text = trace_text.to_text(result, "recovery")  # the CLI's text output
    doc = json.loads(export.to_json_text(result))
    assert doc["summary"]["headline"]["text"] == head["text"] and doc["summary"]["grids"]["hidden"]["peak"]["layer"] == 5
    assert head["text"][:90] in " ".join(line.strip() for line in text.splitlines())


def test_a_running_trace_is_read_by_the_same_rules_over_its_cells_so_far():
    result = make_result(n_layers=6)
    result.grids["hidden"]["prob"][4][5], result.grids["hidden"]["recovery"][4][5] = 0.6, 100.0  # trivial
    whole = PartialTrace(result.tokens, result.subject_range, "all", 0.1, result.grids)
    assert sites_line(whole, ("hidden", "mlp"), "recovery", so_far=True) == sites_line(
        result, ("hidden", "mlp"), "recovery").replace(" site:", " site so far:")
    # so far only the last token's row: no subject site yet; the trivial cell is still no headline
    part = {k: {m: [row if t == 4 else [None] * 6 for t, row in enumerate(g)] for m, g in grid.items()}
            for k, grid in result.grids.items()}
    line = sites_line(PartialTrace(result.tokens, (1, 3), "all", 0.1, part), ("hidden",), "recovery", so_far=True)
    assert line.startswith("subject site so far: none yet · late site so far: hidden layer 3 at ␣in (18.0)")
    assert "1 trivial" in line


def test_substitution_has_no_noise_exclusion_and_positions_rows_are_sites():
    result = make_result(n_layers=6, noise=False, positions="1-2")
    g = summarize(result)["grids"]["hidden"]
    assert g["left_out"] == {"trivial": 0, "within_noise": 0}
    assert g["subject_site"]["tokens"] == [1, 2] and g["late_site"] is None  # the row restores no last token


# ---- the exports ------------------------------------------------------------------------------------


def test_json_carries_predictions_summary_and_uncertainty():
    doc = json.loads(export.to_json_text(make_result(), top=2))
    assert doc["clean_top"] == [{"id": 7, "text": " Paris", "prob": 0.6}, {"id": 9, "text": " France", "prob": 0.1}]
    assert doc["corrupted_top"][0] == {"id": 3, "text": " London", "prob": 0.3}
    assert doc["recovery_available"] is True and doc["alignment"] is None and doc["config"]["top_k"] == 2
    assert doc["target_tokens"] == [{"id": 7, "text": " Paris", "clean_prob": 0.6, "corrupted_prob": 0.1}]
    assert set(doc["grids"]["mlp"]) == {"prob", "recovery", "logit_diff", "prob_std", "prob_low", "prob_high",
                                        "logit_diff_std"}
    assert doc["summary"]["grids"]["hidden"]["peak"]["layer"] == 3
    assert len(doc["summary"]["grids"]["hidden"]["top_layers"]) == 2
    substitution = make_result(noise=False)
    assert set(json.loads(export.to_json_text(substitution))["grids"]["mlp"]) == {"prob", "recovery", "logit_diff"}


def test_cells_without_values_are_null_empty_and_na():
    result = make_result(recovery_available=False, none_row=0)
    doc = json.loads(export.to_json_text(result))
    assert doc["grids"]["hidden"]["recovery"][2] == [None] * 6 and doc["grids"]["hidden"]["prob"][0] == [None] * 6
    assert doc["recovery_available"] is False
    text = export.to_csv(result)
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert rows[0]["prob"] == "" and rows[6]["recovery"] == "" and rows[6]["prob"] == "0.11"
    out = trace_text.to_text(result)
    assert "recovery % is not available (total effect 0.5000 is below 0.05): showing P(target)" in out
    assert "hidden - P(target)" in out
    table = trace_text.grid_table(result, "hidden", "recovery").splitlines()
    assert table[2].split() == ["The", *["n/a"] * 6]
    assert trace_text.grid_table(result, "hidden", "prob").splitlines()[3].split()[1:3] == ["0.110", "0.110"]
    assert "n/a: no value (a token without a counterpart" in out


def test_csv_comments_and_uncertainty_columns():
    text = export.to_csv(make_result())
    lines = text.splitlines()
    assert lines[:5] == [
        "# model: hand",
        '# target: " Paris" (id 7); clean_prob 0.6; corrupted_prob 0.1',
        "# recovery_available: true",
        '# clean_top: " Paris" 0.6; " France" 0.1',
        '# corrupted_top: " London" 0.3; " Paris" 0.1',
    ]
    assert lines[5] == "kind,token_index,token,layer,prob,recovery,logit_diff,prob_std,prob_low,prob_high,logit_diff_std"
    row = next(csv.reader([lines[6]]))
    assert row == ["hidden", "0", "The", "0", "0.1", "0", "-0.9", "0.02", "0.07", "0.13", "0.5"]
    assert export.to_csv(make_result(noise=False)).splitlines()[5].endswith(",logit_diff")


def test_text_header_has_predictions_and_the_interval_at_the_peak():
    out = trace_text.to_text(make_result())
    assert "95% interval of P(target) at the peak (hidden, token 4 ␣in, layer 3): 0.19 ±0.03 (4 samples)" in out
    assert "(hidden, restored positions, layer 2): 0.15 ±0.03 (4 samples)" in trace_text.to_text(make_result(positions="1-2"))
    lines = out.splitlines()
    i = lines.index("top-2 predictions   clean                     corrupted")
    assert lines[i + 1].split() == ["1", "␣Paris", "0.6000", "␣London", "0.3000"]
    assert lines[i + 2].split() == ["2", "␣France", "0.1000", "␣Paris", "0.1000"]
    assert "95% interval" not in trace_text.to_text(make_result(noise=False))
    one = make_result()
    for grid in one.grids.values():
        grid["prob_low"] = [[float("nan")] * 6 for _ in grid["prob"]]
    one.request = TraceRequest("The Eiffel Tower is in", "Eiffel Tower", kinds=("hidden", "mlp"), samples=1)
    assert ("at the peak (hidden, token 4 ␣in, layer 3): 0.19 (1 sample: no interval)"
            in trace_text.to_text(one))
    assert "hidden: peak 18.0 at token 4 ␣in, layer 3" in out
    assert "  top layers: 3 (18.0), 0 (8.0), 1 (8.0)" in out
    assert "  means: early (0-1) 8.0   middle (2-3) 13.0   late (4-5) 8.0" in out


def test_a_target_of_several_tokens_shows_each():
    result = make_result()
    result.target_text = " New York"
    result.target_tokens = [{"id": 5, "text": " New", "clean_prob": 0.5, "corrupted_prob": 0.2},
                            {"id": 6, "text": " York", "clean_prob": 0.9, "corrupted_prob": 0.5}]
    assert ("target tokens, P clean/corrupted: ␣New 0.5000/0.2000 x "
            "␣York 0.9000/0.5000") in trace_text.header(result).splitlines()
    assert ('# target_tokens: " New" (id 5) clean 0.5 corrupted 0.2; " York" (id 6) clean 0.9 corrupted 0.5'
            in export.to_csv(result).splitlines())
    assert "# target_tokens" not in export.to_csv(make_result())


def test_text_fits_100_columns_with_30_layers_in_blocks():
    result = make_result(n_layers=30)
    result.tokens[3] = " a-very-long-token-indeed-more-than-twenty"
    out = trace_text.to_text(result, top=8)
    assert max(len(line) for line in out.splitlines()) <= 100
    table = trace_text.grid_table(result, "mlp").splitlines()
    # label width 22 (mark + 20 characters + 1): (100 - 22) // 7 = 11 layers per block: 11, 11, 8
    headers = [line.split() for line in table if line.startswith(" " * 22) and line.strip()]
    assert headers == [[str(i) for i in range(0, 11)], [str(i) for i in range(11, 22)],
                       [str(i) for i in range(22, 30)]]
    assert len(table) == 1 + 3 * (1 + len(TOKENS)) + 2  # title; 3 blocks of header + rows; 2 blank lines
    assert "\n ␣a-very-long-token-…   " in out
    assert max(len(line) for line in trace_text.to_text(result, layout="layers-down").splitlines()) <= 100


def test_rows_of_restored_positions_are_labelled():
    assert trace_text.compact_positions([7, 0, 1, 2, 5, 6, 9]) == "0-2,5-7,9"
    assert trace_text.grid_table(make_result(positions="1-2"), "hidden").splitlines()[2].startswith("␣Eiffel + ␣Tower ")
    result = make_result(positions="1-2")
    result.positions = [0, 1, 2, 3]
    assert trace_text.grid_table(result, "hidden").splitlines()[2].startswith("tokens 0-3  ")


def test_header_shows_the_alignment():
    result = make_result(noise=False)
    result.corruption = "substitution"
    result.request = TraceRequest("The Eiffel Tower is in", "Eiffel Tower", corrupted_prompt="The Louvre is in")
    result.alignment = {"corrupted_tokens": ["The", " Louvre", " is", " in"], "clean_to_corrupted": [0, None, 1, 2, 3],
                        "prefix": 1, "suffix": 2}
    lines = trace_text.header(result).splitlines()
    assert "corrupted tokens: The ␣Louvre ␣is ␣in (shared prefix 1, suffix 2 tokens)" in lines
    assert "clean tokens without a counterpart (not restored): 1" in lines
    assert json.loads(export.to_json_text(result))["alignment"] == result.alignment


def test_large_values_keep_their_cell_width():
    assert trace_text.cell_text(806.04, "recovery") == " 806.0" and trace_text.cell_text(-1234.5, "recovery") == " -1234"
    assert trace_text.cell_text(-123456.0, "recovery") == "-1e+05" and trace_text.cell_text(None, "prob") == "   n/a"


def test_layers_down_layout():
    result = make_result(n_layers=6)
    lines = trace_text.layers_table(result, "recovery").splitlines()
    assert lines[0] == "recovery % by layer (rows: layers; columns: kinds, each along its peak's row)"
    assert lines[1] == "  hidden: token 4 ␣in   mlp: token 4 ␣in"
    assert lines[2].split() == ["layer", "hidden", "mlp"]
    # hidden along row 4: 8 but 18 at layer 3 (its peak, starred); mlp along row 4: 18 at layer 4
    assert [line.split() for line in lines[3:]] == [
        ["0", "8.0", "8.0"], ["1", "8.0", "8.0"], ["2", "8.0", "8.0"], ["3", "18.0*", "8.0"],
        ["4", "8.0", "18.0*"], ["5", "8.0", "8.0"]]
    together = trace_text.layers_table(make_result(n_layers=3, positions="1-2"), "prob").splitlines()
    assert together[1] == "  restored together: 1 ␣Eiffel + 2 ␣Tower"
    assert "'*' marks each column's peak" in trace_text.to_text(result, layout="layers-down")


# ---- help -----------------------------------------------------------------------------------------------


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_option_of_every_command_has_help_with_its_default():
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"trace", "sweep", "sweep-report", "sweep-export-npz", "doctor"} <= set(commands)
    checked = 0
    for name, sub in [("tracer-tui", parser), *commands.items()]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            shown = help_with_default(action)
            assert shown.strip(), f"{name} {action.option_strings or action.dest} has no help"
            if action.default not in (None, False):
                value = ",".join(map(str, action.default)) if isinstance(action.default, tuple) else str(action.default)
                assert "default" in shown and value in shown, f"{name} {action.option_strings}: {shown!r}"
            checked += 1
    assert checked > 40
    assert "(default: 5)" in commands["trace"].format_help()


def test_readme_trace_synopsis_matches_the_parser():
    text = README.read_text()
    synopsis = re.search(r"```\n(tracer-tui trace --prompt P.*?)```", text, re.S).group(1)
    trace = _subparsers(build_parser())["trace"]
    options = {o for a in trace._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    assert set(re.findall(r"--[a-z][a-z-]*", synopsis)) == options


def test_every_option_the_readme_shows_exists():
    """Each `uv run tracer-tui COMMAND ...` line of the README names only options COMMAND has."""
    commands = _subparsers(build_parser())
    seen = 0
    for command, rest in re.findall(r"^(?:uv run )?tracer-tui ([a-z-]+) (.*)$", README.read_text(), re.M):
        if command not in commands:
            continue
        known = {o for a in commands[command]._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest.split("#")[0]):
            assert option in known, f"README: tracer-tui {command} has no {option}"
            seen += 1
    assert seen > 10
