"""Issue 13.5 in the app: F10 traces the form's fact under several corruptions (Engine.robustness)."""

from __future__ import annotations

from concurrent.futures import Future

from tui_helpers import ready, wait_for
from textual.widgets import Input

from tui.app import make_app
from tui.screens.robustness import RobustnessScreen


class WithRobustness:
    """The test engine with a stand-in Engine.robustness (the engine's own is tested in tests/)."""

    def __init__(self, engine):
        self._engine, self.calls = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def robustness(self, prompt, subject, on_event=None, cancel=None, **options):
        from tracer.events import Log

        self.calls.append((prompt, subject, options))
        on_event(Log("info", "ignored"))
        future: Future = Future()
        future.set_result(f"hidden: stable at {subject!r}")
        return future


async def test_f10_shows_the_robustness_report(engine):
    eng = WithRobustness(engine)
    app = make_app(engine=eng)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "3"
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, RobustnessScreen) and app.screen.result is not None,
                       what="the robustness report")
        assert "stable at 'Eiffel Tower'" in app.screen.text
        prompt, subject, options = eng.calls[0]
        assert subject == "Eiffel Tower" and options["samples"] == 3
        await pilot.press("escape")
        assert not isinstance(app.screen, RobustnessScreen)


async def test_without_engine_robustness_it_says_so(engine):
    if hasattr(engine, "robustness"):
        return  # merged: the real view is exercised above through the same screen
    app = make_app(engine=engine)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, RobustnessScreen), what="the screen")
        await pilot.pause(0.2)
        assert "not available yet" in str(app.screen.status.render())
