"""Issue 16.5: the trace settings persist between launches (with the theme), in platformdirs' config
folder; the app takes them as flags generated from TraceSettings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from textual.widgets import Checkbox, Input
from tui_helpers import ready

from tui.__main__ import parse
from tui.app import make_app, settings_overrides
from tui.config import CONFIG_ENV, config_dir, config_path, load_config, saved_settings

REPO = Path(__file__).resolve().parents[2]


async def test_settings_are_kept_for_the_next_launch(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one("#samples", Input).value = "4"
        app.query_one("#noise", Input).value = "0.1"
        app.query_one("#kind-attn", Checkbox).value = False
        app.query_one("#export-dir", Input).value = "my-exports"
        await pilot.pause(0.2)
    saved = json.loads(config_path().read_text())
    assert saved["trace"]["samples"] == 4 and saved["trace"]["kinds"] == ["hidden", "mlp"]
    assert saved["export_dir"] == "my-exports"
    app = make_app(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        panel = app.trace_screen.panel.read()
        assert panel.trace.samples == 4 and panel.trace.noise == "0.1" and panel.trace.kinds == ("hidden", "mlp")
        assert panel.export_dir == "my-exports"


async def test_flags_override_the_saved_settings(engine):
    data = {"trace": {"samples": 4, "kinds": ["hidden", "mlp"], "window": 3}}
    args, code = parse(["--samples", "20", "--kinds", "mlp"])
    assert code is None
    settings, warning = saved_settings(data, settings_overrides(args))
    assert warning is None
    assert (settings.samples, settings.kinds, settings.window) == (20, ("mlp",), 3)
    app = make_app(engine=engine, settings=settings)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.query_one("#samples", Input).value == "20"
        assert not app.query_one("#kind-hidden", Checkbox).value and app.query_one("#kind-mlp", Checkbox).value


def test_a_saved_setting_that_no_longer_validates_is_dropped_with_a_warning():
    settings, warning = saved_settings({"trace": {"samples": 0}})
    assert settings.samples == 10 and "saved trace settings ignored: samples must be between 1" in warning


def test_the_config_folder_comes_from_platformdirs(monkeypatch):
    from platformdirs import user_config_dir

    monkeypatch.delenv(CONFIG_ENV)
    assert config_dir() == Path(user_config_dir("tracer-tui", appauthor=False))


def test_a_bad_setting_flag_is_one_line_and_exit_2(config_dir):
    for flag, message in ((["--samples", "x"], "--samples must be a whole number (got 'x')"),
                          (["--kinds", "bogus"], "unknown kind 'bogus': choose from hidden, mlp, attn")):
        out = subprocess.run([sys.executable, "-m", "tui", *flag], cwd=REPO, capture_output=True, text=True,
                             timeout=120, env={**__import__("os").environ, CONFIG_ENV: str(config_dir)})
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.startswith(f"tracer-tui: error: {message}") and out.stderr.count("\n") == 1  # one line
    assert load_config() == ({}, None)  # nothing saved by a refused launch
