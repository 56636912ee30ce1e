"""A small JSON settings file: the chosen theme, the trace settings and the export folder, kept
between launches.

Location: $TRACER_TUI_CONFIG_DIR, else platformdirs' user config folder for "tracer-tui"
(~/.config/tracer-tui on Linux, honouring $XDG_CONFIG_HOME; ~/Library/Application Support/tracer-tui on macOS).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_ENV = "TRACER_TUI_CONFIG_DIR"


def config_dir() -> Path:
    """The folder of config.json and the user's themes."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("tracer-tui", appauthor=False))


def config_path() -> Path:
    return config_dir() / "config.json"


# the settings kept, and the type each must have; a value of another type is dropped with a warning
CONFIG_TYPES = {"theme": str, "export_dir": str, "trace": dict, "launched": bool, "adaptive": dict}
MAX_CONFIG_BYTES = 1 << 20


def load_config() -> tuple[dict, str | None]:
    """(settings, error line or None). A missing file is an empty config; a broken one (not a
    regular file, too large, not JSON, not an object) is reported and read as empty (the
    defaults); a known setting of the wrong type is dropped and reported."""
    from tracer.errors import InputError
    from tracer.userfiles import read_user_file

    path = config_path()
    if not os.path.lexists(path):
        return {}, None
    try:
        data = json.loads(read_user_file(path, "settings file", max_bytes=MAX_CONFIG_BYTES).decode("utf-8"))
    except InputError as exc:
        return {}, f"{exc}; using the defaults"
    except ValueError as exc:  # not JSON, not UTF-8
        return {}, f"could not read {path}: {exc}; using the defaults"
    if not isinstance(data, dict):
        return {}, f"could not read {path}: not a JSON object; using the defaults"
    bad = sorted(k for k, kind in CONFIG_TYPES.items() if k in data and not isinstance(data[k], kind))
    if bad:
        data = {k: v for k, v in data.items() if k not in bad}
        return data, f"{path}: ignored {', '.join(bad)} (not a {'/'.join(CONFIG_TYPES[k].__name__ for k in bad)})"
    return data, None


def save_config(updates: dict) -> str | None:
    """Merge `updates` into the config file; returns an error line or None."""
    data, _ = load_config()
    data.update(updates)
    path = config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        return f"could not save settings to {path}: {exc}"
    return None


def saved_settings(data: dict, overrides: dict | None = None):
    """(TraceSettings, warning or None): the saved trace settings (`data["trace"]`) with `overrides`
    (flags given on the command line, by field name) on top. A saved value that no longer validates
    is dropped with a warning; a bad override raises InputError (the command line reports it)."""
    from tracer.errors import InputError
    from tracer.settings import SETTING_NAMES, TraceSettings

    saved = data.get("trace") if isinstance(data.get("trace"), dict) else {}
    saved = {k: v for k, v in saved.items() if k in SETTING_NAMES}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    warning = None
    try:
        TraceSettings(**saved)
    except (InputError, TypeError, ValueError) as exc:
        saved, warning = {}, f"saved trace settings ignored: {exc}"
    return TraceSettings(**{**saved, **overrides}), warning


def saved_adaptive(data: dict) -> tuple[bool, float, str | None]:
    """(Samples auto, its CI width, warning or None) from the saved `data["adaptive"]`
    ({"auto": bool, "ci_width": a number between 0 and 1}); what does not read so is dropped
    with a warning (the defaults: fixed samples, tracer.types.AUTO_CI_WIDTH)."""
    from tracer.types import AUTO_CI_WIDTH, valid_ci_width

    saved = data.get("adaptive")
    if not isinstance(saved, dict):
        return False, AUTO_CI_WIDTH, None
    auto, width = saved.get("auto", False), saved.get("ci_width", AUTO_CI_WIDTH)
    if not isinstance(auto, bool) or not valid_ci_width(width):
        return False, AUTO_CI_WIDTH, f"saved adaptive samples ignored: {saved!r:.80}"
    return auto, float(width), None
