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


def load_config() -> tuple[dict, str | None]:
    """(settings, error line or None). A missing file is an empty config; a broken one is reported."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        return {}, f"could not read {path}: {exc}"
    if not isinstance(data, dict):
        return {}, f"could not read {path}: not a JSON object"
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
    except (InputError, TypeError) as exc:
        saved, warning = {}, f"saved trace settings ignored: {exc}"
    return TraceSettings(**{**saved, **overrides}), warning
