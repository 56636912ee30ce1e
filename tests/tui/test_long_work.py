"""Long work asks first (issue 24.4): the sweep screen opens idle, Run shows the facts, the
estimated time (the engine's measured cost per token-layer) and the results file in the export
folder, and starts only on Start; ctrl+x stops a sweep from any focus."""

from __future__ import annotations

import threading

from tracer.inputs.facts_file import load_facts
from tracer.work import trace_work

from textual.widgets import Input
from tui_helpers import ready, run_and_wait, wait_for

from tui.app import make_app
from tui.screens.sweep import ConfirmSweep, SweepScreen


async def test_the_sweep_screen_opens_idle_and_asks_before_a_sweep(engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(engine=engine, export_dir=str(tmp_path / "out"))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "2"
        await run_and_wait(pilot)
        cost = engine.cost_per_token_layer
        assert cost and cost > 0
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), what="the sweep screen")
        screen = app.screen
        await pilot.pause(0.3)
        assert screen.running is None and not list(tmp_path.rglob("*.jsonl"))  # idle, nothing written
        assert screen.query_one("#sweep-results", Input).value == str(tmp_path / "out" / "results.jsonl")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmSweep), what="the confirmation")
        plan = app.screen.plan
        facts = load_facts("known_1000")
        assert plan.n_facts == plan.n_left == len(facts) == 1209
        assert plan.results == str((tmp_path / "out" / "results.jsonl").resolve())
        n_layers, head = app.model_info.n_layers, app.model_info.head_layers  # a row's logits, in token-layers
        assert head > 0
        work = 0
        for f in facts:
            tokens, span = engine.tokenize(f.prompt, f.subject)
            work += len(tokens) * n_layers + head + trace_work(len(tokens), n_layers, settings=screen.config,
                                                               free_before=span[0], head=head)
        assert abs(plan.seconds - work * cost) <= 1e-9 * plan.seconds
        text = "\n".join(plan.lines())
        assert "Sweep 1209 facts of known_1000" in text and "estimated time: up to" in text
        assert str(tmp_path / "out" / "results.jsonl") in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back, no sweep")
        await pilot.pause(0.3)
        assert screen.running is None and not list(tmp_path.rglob("*.jsonl"))


async def test_ctrl_x_stops_a_sweep_while_a_field_has_focus(engine, tmp_path):
    app = make_app(engine=engine, export_dir=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        gate = threading.Event()
        engine.submit(gate.wait, 30)  # the sweep waits in the engine's queue until released
        try:
            await pilot.press("f6")
            await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), what="the sweep screen")
            screen = app.screen
            screen.limit = 2
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmSweep), what="the confirmation")
            await pilot.press("enter")
            await wait_for(pilot, lambda: screen.running is not None, what="the sweep to start")
            field = screen.query_one("#sweep-facts", Input)
            field.focus()
            await pilot.pause()
            assert app.focused is field
            await pilot.press("ctrl+x")
            assert screen.running.cancel.is_set()
            assert field.value == "known_1000"  # not cut
        finally:
            gate.set()
        await wait_for(pilot, lambda: screen.running is None, what="the sweep to end")


def test_the_sweep_eta_weighs_the_facts_by_their_token_layers():
    import time

    from tui.screens.sweep import _Running

    run = _Running(threading.Event(), work={1: 100, 2: 300}, seconds=40.0, started=time.monotonic() - 10.0)
    run.work_done = 100  # a quarter in 10 s: the pace says 30 s left, the estimate 40 - 10 = 30 s
    assert run.eta() == "ETA 30s (10s elapsed)"
    run.seconds = 20.0  # the estimate says 10 s left: blended 0.75 x 10 + 0.25 x 30
    assert run.eta() == "ETA 15s (10s elapsed)"
    # tracing: the work the engine reports (FactProgress), by the tracing phase's own time
    from tui.gridmodel import WorkClock

    run.clock = WorkClock(time.monotonic() - 4.0)
    assert run.eta() == "ETA 15s (10s elapsed)"  # nothing counted yet: the estimate
    run.clock.update(100, 500)  # a fifth of the token-layers in 4 s: 16 s left
    assert run.eta() == "ETA 16s (10s elapsed)"
