"""Issue 16.4: the first launch traces the pre-filled example in the view that shows the paper's
two-site picture: all tokens, hidden states (on the embedded SmolLM2-135M the chosen position
' Tower' peaks at 2% recovery while the all-tokens hidden grid shows the early site at 'iffel' and
the late site at ' of'; see the report of this change)."""

from __future__ import annotations

from textual.widgets import Select
from tui_helpers import ready, result, wait_for

from tui.app import make_app
from tui.config import save_config


async def test_the_example_runs_at_once_in_the_all_tokens_hidden_view(engine):
    app = make_app(engine=engine, autorun=True)
    async with app.run_test(size=(140, 48)) as pilot:
        await ready(pilot)
        ts = app.trace_screen
        assert (ts.view_mode, ts.view_kind, ts.metric) == ("all", "hidden", "recovery")
        assert app.query_one("#view-mode", Select).value == "all"
        await wait_for(pilot, lambda: result(ts, "all") is not None, 120, "the first trace")
        assert result(ts, "all").positions == "all" and ts.pane.current.kind == "hidden"


async def test_later_launches_wait_for_the_user(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.pause(0.5)
        assert app.trace_screen.run is None


def test_only_the_first_launch_runs_the_example(monkeypatch, config_dir):
    import tui.app as app_module

    made = []

    class NoRun:
        return_code = 0

        def run(self):
            pass

    monkeypatch.setattr(app_module, "make_app", lambda **kw: made.append(kw["autorun"]) or NoRun())
    args = type("Args", (), {})()
    assert app_module.run_app(args) == 0 and app_module.run_app(args) == 0
    assert made == [True, False]
    save_config({"launched": False})
    app_module.run_app(args)
    assert made[-1] is True
