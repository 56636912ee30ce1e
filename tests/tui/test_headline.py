"""An honest headline in the app (issue 24.2): a finished grid names the subject site and the late
site, never the last token's trivial last layers; the running grid says "peak so far". Fake engine:
its hidden grid rises to 90% at the last token's last layer."""

from __future__ import annotations

from fake_engine import N_LAYERS, FakeEngine
from tui_helpers import ready, run_and_wait

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
        assert ts.status.plain.endswith(headline)
