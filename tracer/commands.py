"""Headless subcommands (trace, sweep, sweep-report); filled in by the engine issues."""

from __future__ import annotations


def add_subcommands(sub, add_model_args) -> None:
    pass


def dispatch(args) -> int:
    raise SystemExit(f"unknown command {args.command}")
