"""Issue #14 item 9: the app shows a TracerError's own message; anything else is a bug, shown as
'internal error: <one line>' with a log line saying where it was raised, and the app stays up."""

from __future__ import annotations

from tracer.engine import Engine
from tracer.errors import InputError

from tui_helpers import notifications, ready, run_and_wait, wait_for

from tui.app import make_app
from tui.widgets.log import RunLog


async def _run_with(monkeypatch, engine, exc):
    import tracer.api

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(tracer.api, "run_trace", boom)  # what the engine's trace runs, through tracer.trace
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await run_and_wait(pilot)
        assert app.is_running
        return notifications(app), list(app.query_one(RunLog).lines_text)


async def test_unexpected_exception_in_a_run_is_an_internal_error(monkeypatch, engine):
    notes, log = await _run_with(monkeypatch, engine, ValueError("expected non-negative integer\nsecond line"))
    assert ("error", "run failed: internal error: ValueError: expected non-negative integer") in notes
    assert not any("second line" in m for _, m in notes)
    assert any("ValueError at test_internal_errors.py:" in line and "in boom (please report this bug)" in line
               for line in log), log


async def test_bad_input_in_a_run_is_shown_as_its_message(monkeypatch, engine):
    notes, log = await _run_with(monkeypatch, engine, InputError("the subject is empty"))
    assert ("error", "run failed: the subject is empty") in notes
    assert not any("internal error" in line or "please report" in line for line in log)


async def test_unexpected_exception_while_loading_is_an_internal_error(tiny_model_dir):
    engine = Engine(str(tiny_model_dir))

    def broken_load():
        return 1 // 0

    engine._load = broken_load
    try:
        app = make_app(engine=engine)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.model_error is not None, what="the load to fail")
            await pilot.pause(0.2)
            message = "model failed to load: internal error: ZeroDivisionError: integer division or modulo by zero"
            assert ("error", message) in notifications(app)
            log = app.query_one(RunLog).lines_text
            assert any("ZeroDivisionError at test_internal_errors.py:" in line for line in log), log
            assert app.is_running
    finally:
        engine.close()
