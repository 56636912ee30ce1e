"""Issue 25: the app's own settings file, however broken, is reported and replaced by the
defaults; the app stays alive."""

from __future__ import annotations

import json
import os

from tracer.settings import TraceSettings

import pytest
from tui_helpers import notifications, ready

from tui.app import make_app
from tui.config import load_config, save_config, saved_settings


async def test_dict_theme_and_text_samples_are_reported_and_defaults_used(engine, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "config.json").write_text(json.dumps({"theme": {"a": 1}, "trace": {"samples": "abc"}}))
    app = make_app(engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert app.theme == "dark"
        messages = [m for _, m in notifications(app)]
        assert any("ignored theme" in m for m in messages), messages
        assert any("saved trace settings ignored" in m and "samples" in m for m in messages), messages
        assert app.trace_screen.panel.read().trace.samples == TraceSettings().samples
    assert app.return_code in (None, 0)


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe", b"{nope", b'{"export_dir": 5, "launched": "yes"}'])
def test_broken_config_reads_as_defaults_with_one_line(config_dir, content):
    config_dir.mkdir(parents=True)
    (config_dir / "config.json").write_bytes(content)
    data, error = load_config()
    assert error and "\n" not in error
    assert all(k not in data for k in ("export_dir", "launched", "theme"))
    settings, warning = saved_settings(data)
    assert settings == TraceSettings() and warning is None
    assert save_config({"theme": "light"}) is None  # the broken file is replaced
    assert load_config() == ({"theme": "light"}, None)


def test_config_that_is_a_pipe_or_too_large_is_refused_not_read(config_dir):
    config_dir.mkdir(parents=True)
    os.mkfifo(config_dir / "config.json")  # opening a pipe with no writer would block forever
    data, error = load_config()
    assert data == {} and "named pipe" in error
    os.remove(config_dir / "config.json")
    with open(config_dir / "config.json", "wb") as f:
        f.truncate(2 << 20)  # 2 MiB of zeros, sparse
    data, error = load_config()
    assert data == {} and "MiB" in error
