"""Themes as data: TOML files in themes/ (and the user's config dir) -> Textual `Theme`s.

A theme file holds Textual's theme colours plus a `[heatmap]` table with the grid's
colour scale. Built-in files live in the repo's `themes/` when running from source and
in `tui/themes_data/` inside the wheel (pyproject force-includes them there).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import InputError
from tracer.userfiles import read_user_file

from textual.color import Color
from textual.theme import Theme

from .config import config_dir

DEFAULT_THEME = "dark"
THEME_FIELDS = (
    "primary", "secondary", "warning", "error", "success", "accent",
    "foreground", "background", "surface", "panel", "boost",
)
HEAT_KEYS = ("low", "high", "hidden", "mlp", "attn")


def builtin_theme_dirs() -> list[Path]:
    """Where the shipped theme files are: the wheel's copy, then the source tree's."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "themes_data", here.parent / "themes") if d.is_dir()]


def user_theme_dir() -> Path:
    return config_dir() / "themes"


@dataclass
class LoadedThemes:
    themes: dict[str, Theme]
    errors: list[str]  # one line per unreadable file


def theme_from_toml(text: str, fallback_name: str) -> Theme:
    """Parse one theme file; raises ValueError with a readable message."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    heat = data.pop("heatmap", {}) or {}
    if not isinstance(heat, dict):
        raise ValueError("[heatmap] must be a table")
    name = str(data.pop("name", fallback_name))
    if "primary" not in data:
        raise ValueError("missing 'primary' colour")
    kwargs: dict = {"name": name, "dark": bool(data.pop("dark", True))}
    for key in THEME_FIELDS:
        if key in data:
            kwargs[key] = _colour(str(data.pop(key)), key)
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            kwargs[key] = float(data.pop(key))
    variables = {str(k): str(v) for k, v in (data.pop("variables", {}) or {}).items()}
    for key in HEAT_KEYS:
        if key in heat:
            variables[f"heat-{key}"] = _colour(str(heat[key]), f"heatmap.{key}")
    if data:
        raise ValueError(f"unknown keys: {', '.join(sorted(data))}")
    return Theme(variables=variables, **kwargs)


def _colour(value: str, key: str) -> str:
    try:
        Color.parse(value)
    except Exception:  # textual raises ColorParseError; any failure is the user's typo
        raise ValueError(f"{key}: {value!r} is not a colour") from None
    return value


MAX_THEME_BYTES = 1 << 20


def load_themes(extra_dirs: list[Path] | None = None) -> LoadedThemes:
    """Built-in themes, then the user's (a user file may replace a built-in by name)."""
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    dirs = builtin_theme_dirs()[:1] + [user_theme_dir()] + list(extra_dirs or [])
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                text = read_user_file(path, "theme file", max_bytes=MAX_THEME_BYTES).decode("utf-8")
                theme = theme_from_toml(text, path.stem)
            except InputError as exc:
                errors.append(str(exc))
                continue
            except (OSError, ValueError, TypeError) as exc:
                errors.append(f"theme {path}: {exc}")
                continue
            themes[theme.name] = theme
    return LoadedThemes(themes, errors)


@dataclass(frozen=True)
class HeatScale:
    low: tuple[int, int, int]
    high: tuple[int, int, int]

    def at(self, t: float) -> tuple[int, int, int]:
        t = 0.0 if t != t else min(1.0, max(0.0, t))  # NaN -> low
        return tuple(round(a + (b - a) * t) for a, b in zip(self.low, self.high))  # type: ignore[return-value]

    def hex(self, t: float) -> str:
        return "#%02x%02x%02x" % self.at(t)


def heat_scale(variables: dict[str, str], kind: str | None = None) -> HeatScale:
    """The colour scale for a grid: per kind in the tokens view, `high` otherwise.
    Themes without a [heatmap] table (Textual's own) fall back to surface -> accent."""
    low = variables.get("heat-low") or variables.get("surface") or "#000000"
    high = (kind and variables.get(f"heat-{kind}")) or variables.get("heat-high") or variables.get("accent") or "#ffffff"
    return HeatScale(rgb(low), rgb(high))


def rgb(value: str) -> tuple[int, int, int]:
    try:
        return Color.parse(value).rgb
    except Exception:  # a theme variable we did not validate (Textual's own themes)
        return (128, 128, 128)
