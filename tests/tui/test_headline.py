"""An honest headline in the app (issue 24.2): a finished grid names the subject site and the late
site, never the last token's trivial last layers; a running grid says the same "so far" (issue 24.5:
it said "peak so far" of the trivial cell). Fake engine: its hidden grid rises to 90% at the last
token's last layer."""

from __future__ import annotations

from concurrent.futures import Future

from tracer.events import CellsDone

from fake_engine import N_LAYERS, FakeEngine
from tui_helpers import ready, run_and_wait, wait_for

from tui.app import make_app


async def test_the_headline_names_both_sites_and_not_the_trivial_last_cell():
    app = make_app(engine=FakeEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        ts = app.trace_screen
        result = ts.finished["all"][1]
        last = len(result.tokens) - 1
        recovery = result.grids["hidden"]["recovery"]
        assert max(max(r) for r in recovery) == recovery[last][N_LAYERS - 1]  # the plain peak: trivial
        # the subject's last token (' Tower', row 2) peaks at layer 3; the last token rises with the layer,
        # so without its last 12 // 6 = 2 layers its largest cell is layer 9
        late = recovery[last][N_LAYERS - 3]
        headline = str(ts.pane.peak.render())
        assert headline.startswith(f"subject site: hidden layer 3 at ␣Tower ({recovery[2][3]:.1f})")
        assert f"late site: hidden layer {N_LAYERS - 3} at ␣of ({late:.1f})" in headline
        assert "2 trivial (hidden, last token, last 2 layers)" in headline
        assert "within noise" in headline  # the cells' intervals arrive with them (CellsDone.prob_low/high)
        assert ts.status.plain.endswith(headline)


class RunningEngine(FakeEngine):
    """Sends Started and the exact cells of the last token's row and the subject's last token's row
    (with their intervals); the trace never ends."""

    def trace(self, request, on_event=None, cancel=None, *, settle=None) -> Future:
        events = []
        self.result = super().trace(request, events.append).result()
        last, subject = len(self.result.tokens) - 1, self.result.subject_range[1] - 1
        on_event(events[0])  # Started
        for event in events[1:]:
            if isinstance(event, CellsDone) and event.kind == "hidden" and event.cells[0][0] in (last, subject):
                on_event(event)
        return Future()


async def test_the_running_headline_follows_the_same_rules_not_the_trivial_peak_so_far():
    engine = RunningEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        await pilot.press("ctrl+r")
        last = len(engine.result.tokens) - 1

        def arrived():
            grid = ts.run.grid if ts.run is not None else None
            return grid is not None and None not in grid.values["hidden"]["prob"][last]

        await wait_for(pilot, arrived, what="the last token's row")
        await pilot.pause(0.3)
        recovery = engine.result.grids["hidden"]["recovery"]
        headline = str(ts.pane.peak.render())
        assert "peak so far" not in headline  # it named the last token's last layer, trivially 100%
        assert headline.startswith(f"subject site so far: hidden layer 3 at ␣Tower ({recovery[2][3]:.1f})")
        assert f"late site so far: hidden layer {N_LAYERS - 3} at ␣of ({recovery[last][N_LAYERS - 3]:.1f})" in headline
        assert "2 trivial (hidden, last token, last 2 layers)" in headline
        assert "within noise" in headline  # the cells' intervals arrive with them (CellsDone.prob_low/high)
