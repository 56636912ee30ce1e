"""Issue 13.5 in the app: F10 traces the form's fact under several corruptions (Engine.robustness)."""

from __future__ import annotations

from tracer.render.robustness import render

from textual.widgets import Input
from tui_helpers import ready, wait_for

from tui.app import make_app
from tui.screens.robustness import RobustnessScreen


class Recording:
    """The test engine, noting the options Engine.robustness is called with."""

    def __init__(self, engine):
        self._engine, self.calls = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def robustness(self, prompt, subject, **options):
        self.calls.append((prompt, subject, {k: v for k, v in options.items() if k not in ("on_event", "cancel")}))
        return self._engine.robustness(prompt, subject, **options)


async def test_f10_shows_the_robustness_report(engine):
    eng = Recording(engine)
    app = make_app(engine=eng)
    async with app.run_test(size=(140, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "2"
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, RobustnessScreen) and app.screen.result is not None,
                       what="the robustness report", timeout=300)
        result = app.screen.result
        prompt, subject, options = eng.calls[0]
        assert subject == "Eiffel Tower" and options["samples"] == 2 and result.subject == subject
        assert len(result.runs) >= 5  # noise at three strengths, uniform, replacement (+ substitutes)
        assert app.screen.text == render(result)  # the engine's own report: table, plots, verdicts
        assert result.verdict.split(":")[0] in app.screen.text
        await pilot.press("escape")
        assert not isinstance(app.screen, RobustnessScreen)
