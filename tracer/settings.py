"""The trace settings: one frozen record, validated once, shared by every door.

`TraceSettings` holds what a trace is run *with* (kinds, samples, the noise rule,
replace, window, seed, severed paths); `TraceRequest` (events.py) adds what is
traced (prompt, subject, ...) and the sweep config adds the model. The CLI's flags
(defaults and help text included) are generated from the fields' metadata
(`add_settings_arguments`), so a default is written in exactly one place.

The noise rule follows ROME's grammar (`kmeng01/rome experiments/causal_trace.py`,
see docs/method.md#d12-noise-rules), with one addition of ours (`v<k>`):

    s<k>    k x sigma of the known_1000 subjects' token embeddings (ROME's default s3)
    NUMBER  an absolute std (ROME's scripts: 0.1 for GPT-2 XL, 0.025 for GPT-J)
    v<k>    k x sigma of all token-embedding values (this tool's former default)
    u<h>    uniform noise on [-h, h] (std h / sqrt 3)
    t<df>   Student-t with df degrees of freedom, scaled to the variance of s3
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields

from .errors import InputError

KINDS = ("hidden", "mlp", "attn")
# the names other tools (mlxterp, TransformerLens, the seed tutorial) give the kinds
KIND_ALIASES = {
    "output": "hidden", "resid": "hidden", "residual": "hidden", "block": "hidden",
    "self_attn": "attn", "attention": "attn", "attn_out": "attn",
    "mlp_out": "mlp", "ffn": "mlp",
}
SEVERABLE = ("mlp", "attn")
MAX_SAMPLES = 10_000
MAX_SEED = 2**32 - 1  # numpy.random.RandomState accepts seeds in [0, 2**32)
T_FACTORS = 1000  # ROME's Student-t rule draws 1,000 chi-square factors once

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class NoiseRule:
    """A parsed noise rule. `basis` says what `value` multiplies:
    "subject" (s<k>), "absolute" (a number), "embedding" (v<k>), "uniform" (u<h>, half-width),
    "student-t" (t<df>, degrees of freedom; scaled like s3)."""

    basis: str
    value: float

    @classmethod
    def parse(cls, text) -> "NoiseRule":
        """Parse a rule ("s3", "0.1", "v3", "u0.3", "t3"); InputError names what is wrong."""
        if isinstance(text, bool):
            raise InputError(f"bad noise rule {text!r}")
        if isinstance(text, (int, float)):
            text = repr(float(text))
        raw = str(text).strip()
        m = re.fullmatch(rf"([svut]?)({_NUMBER})?", raw)
        if not m or (m.group(1) in ("", "u", "t") and m.group(2) is None):
            raise InputError(
                f"bad noise rule {raw!r}: use s<k> (k x sigma of subject embeddings, default s3), "
                "a number (absolute std), v<k> (k x sigma of all embeddings), u<h> (uniform) or t<df> (Student-t)"
            )
        prefix = m.group(1)
        value = float(m.group(2)) if m.group(2) is not None else 1.0
        basis = {"s": "subject", "": "absolute", "v": "embedding", "u": "uniform", "t": "student-t"}[prefix]
        if not math.isfinite(value) or value > 1e6:
            raise InputError(f"noise rule {raw!r}: {value:g} is out of range (at most 1e6)")
        if basis == "student-t" and value <= 2:
            raise InputError(f"noise rule {raw!r}: Student-t needs more than 2 degrees of freedom")
        return cls(basis, value)

    @property
    def text(self) -> str:
        prefix = {"subject": "s", "absolute": "", "embedding": "v", "uniform": "u", "student-t": "t"}[self.basis]
        return f"{prefix}{self.value:g}"

    def describe(self, std: float) -> str:
        """The rule in words with its absolute std, e.g. "s3 (3 x sigma_subj, std 0.3500)"."""
        words = {
            "subject": f"{self.value:g} x sigma of the known_1000 subjects' embeddings",
            "absolute": "absolute std",
            "embedding": f"{self.value:g} x sigma of all embedding values",
            "uniform": f"uniform on +-{self.value:g}",
            "student-t": f"Student-t, {self.value:g} df, variance of s3",
        }[self.basis]
        return f"{self.text} ({words}, std {std:.4f})"


def _flag(help_text: str, **extra) -> dict:
    return {"help": help_text, **extra}


@dataclass(frozen=True, kw_only=True)
class TraceSettings:
    """How a trace is run. Validated on construction; InputError names the bad setting.

    Args:
        kinds: what to restore, any of "hidden" (the residual stream after a block),
            "mlp" and "attn" (those sublayers' outputs, over a window of layers), or their
            aliases (KIND_ALIASES: output/resid/residual/block, self_attn/attention/attn_out,
            mlp_out/ffn); stored as the kinds' own names.
        samples: noise draws per cell (noise mode); scores are means over them.
        noise: the noise rule (see the module docstring); "s3" is ROME's default.
        replace: replace the subject's embeddings by the noise instead of adding it.
        window: layers restored around each mlp/attn cell's centre layer.
        seed: seed of numpy.random.RandomState, whose draws ROME uses (seed 1).
        sever: for the hidden kind, also trace with these sublayers ("mlp", "attn")
            frozen at their corrupted values at the restored token (the paper's Figure 3).
    """

    kinds: tuple[str, ...] = field(default=KINDS, metadata=_flag(
        "what to restore: hidden (residual stream; aliases output, resid, block), mlp (alias ffn), "
        "attn (aliases self_attn, attention)", metavar="K,K"))
    samples: int = field(default=10, metadata=_flag(
        f"noise draws per cell, 1..{MAX_SAMPLES}", metavar="N"))
    noise: str = field(default="s3", metadata=_flag(
        "noise rule: s<k> (k x sigma of the known_1000 subjects' embeddings), a number (absolute std), "
        "v<k> (k x sigma of all embeddings), u<h> (uniform +-h), t<df> (Student-t)", metavar="RULE"))
    replace: bool = field(default=False, metadata=_flag(
        "replace the subject embeddings by the noise instead of adding it"))
    window: int = field(default=10, metadata=_flag("layers restored around each mlp/attn cell", metavar="W"))
    seed: int = field(default=1, metadata=_flag("seed of the noise draws (numpy RandomState, as ROME)"))
    sever: tuple[str, ...] = field(default=(), metadata=_flag(
        "also trace hidden states with these sublayers frozen at the restored token: mlp, attn "
        "(the paper's Figure 3)", metavar="K,K"))

    def __post_init__(self):
        set_ = object.__setattr__.__get__(self)
        kinds = _names(self.kinds, KINDS, "kind")
        if not kinds:
            raise InputError(f"no kind chosen: choose from {', '.join(KINDS)}")
        set_("kinds", kinds)
        sever = _names(self.sever, SEVERABLE, "severed kind")
        if sever and "hidden" not in kinds:
            raise InputError("--sever adds series to the hidden kind: include hidden in --kinds")
        set_("sever", sever)
        for name, low, high in (("samples", 1, MAX_SAMPLES), ("window", 1, 100_000), ("seed", 0, MAX_SEED)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{name} must be an integer (got {value!r})")
            if not low <= value <= high:
                raise InputError(f"{name} must be between {low} and {high} (got {value})")
        set_("noise", NoiseRule.parse(self.noise).text)
        set_("replace", bool(self.replace))

    @property
    def noise_rule(self) -> NoiseRule:
        return NoiseRule.parse(self.noise)

    @property
    def grid_names(self) -> tuple[str, ...]:
        """The grids a trace with these settings produces: the kinds, then "hidden-severed-<kind>"."""
        return self.kinds + tuple(severed_name(k) for k in self.sever)

    def as_kwargs(self) -> dict:
        """The settings' own values by name (also of a subclass such as TraceRequest): keyword
        arguments for another record built with the same settings."""
        return {f.name: getattr(self, f.name) for f in fields(TraceSettings)}

    def to_dict(self) -> dict:
        """The settings as JSON values (lists for tuples)."""
        return {name: list(v) if isinstance(v, tuple) else v for name, v in self.as_kwargs().items()}


def severed_name(kind: str) -> str:
    return f"hidden-severed-{kind}"


def kind_name(name, allowed=KINDS, what: str = "kind") -> str:
    """The kind a user's name means: a kind itself or an alias (KIND_ALIASES: "output" -> "hidden",
    "self_attn" -> "attn", "ffn" -> "mlp"); case and spaces do not matter.

    Args:
        name: what the user wrote.
        allowed: the kinds accepted here (KINDS; SEVERABLE for --sever).
        what: the thing named, for the message ("kind", "severed kind").

    Returns:
        The kind's own name, one of `allowed`.

    Raises:
        InputError: an unknown name, with the closest known name when there is one, the choices
            and the aliases (saying that output = hidden).
    """
    key = str(name).strip().lower().replace("-", "_")
    kind = KIND_ALIASES.get(key, key)
    if kind in allowed:
        return kind
    known = [*allowed, *(a for a, k in KIND_ALIASES.items() if k in allowed)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = ""
    if close:
        meaning = KIND_ALIASES.get(close[0], close[0])
        hint = f" (did you mean {close[0]!r}{'' if meaning == close[0] else f', that is {meaning}'}?)"
    aliases = "; ".join(f"{', '.join(a for a, k in KIND_ALIASES.items() if k == kind)} = {kind}"
                        for kind in allowed)
    raise InputError(f"unknown {what} {str(name).strip()!r:.40}{hint}: choose from {', '.join(allowed)} "
                     f"(aliases: {aliases})")


def _names(value, allowed, what) -> tuple[str, ...]:
    if not isinstance(value, (str, list, tuple)):
        raise InputError(f"{what}s must be names ({', '.join(allowed)}), as text or a list (got {type(value).__name__})")
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(kind_name(k, allowed, what) for k in items if str(k).strip()))


def window_layers(kind: str, layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Restored layers [l0, l1) of a cell at `layer`: one layer for `hidden`, a window of `window` centred on
    it otherwise (docs/method.md#d23-the-window-for-mlp-and-attn). Plain integers: the app uses it too."""
    if kind == "hidden":
        return layer, layer + 1
    return max(0, layer - window // 2), min(n_layers, layer - (-window // 2))


SETTING_NAMES = tuple(f.name for f in fields(TraceSettings))


def add_settings_arguments(parser) -> None:
    """Add one flag per TraceSettings field to an argparse parser, with its default and help."""
    for f in fields(TraceSettings):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=meta["help"])
            continue
        parser.add_argument(flag, default=None, metavar=meta.get("metavar"),
                            help=f"{meta['help']} (default: {shown if shown != '' else 'none'})")


def settings_from_args(args) -> TraceSettings:
    """TraceSettings from parsed flags (unset flags keep the defaults)."""
    return TraceSettings(**settings_given(args))


def settings_given(args) -> dict:
    """The settings given as flags, by field name (flags not given are left out); InputError for a
    value that is not a whole number where one is needed."""
    values = {}
    for name in SETTING_NAMES:
        given = getattr(args, name, None)
        if given is None:
            continue
        if name in ("samples", "window", "seed"):
            given = whole_number(given, f"--{name}")
        values[name] = given
    return values


def whole_number(text, flag: str) -> int:
    """A flag's text as an integer: the one parser of whole-number flags (range checks stay with
    the setting); InputError "FLAG must be a whole number (got 'x')" otherwise."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise InputError(f"{flag} must be a whole number (got {text!r})") from None
