"""A small JSON settings file: the chosen theme (and whatever else should survive a restart).

Location: $TRACER_TUI_CONFIG_DIR, else $XDG_CONFIG_HOME/tracer-tui, else ~/.config/tracer-tui.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_ENV = "TRACER_TUI_CONFIG_DIR"


def config_dir() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "tracer-tui"


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
