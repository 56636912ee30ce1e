"""How responsive the app stays while the engine traces: key latency idle vs busy, tab
switches, cancel latency, and the cost of one grid redraw.

    uv run python benchmarks/ui_latency.py                 # the embedded SmolLM2-135M
    uv run python benchmarks/ui_latency.py --model DIR     # any model tracer-tui can load

Runs the real app headless (Textual's Pilot) in a 120x40 terminal. Key latency: a Key
event is posted to the app as the terminal driver would, and timed until the prompt's value
has changed. (`pilot.press` is no use here: it waits for the whole *process* to go idle,
which never happens while the engine thread computes.) Loop lag: how late a 10 ms sleep on
the UI's event loop wakes up; long lags are frames the UI could not draw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracer  # noqa: E402,F401  - fast BLAS before mlx.core

from textual import events

from tui.app import make_app
from tui.widgets.grid import GridPlot


def summary(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1)}


async def wait(pilot, condition, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(0.02)  # not pilot.pause: it posts a message to every widget each time


async def key_latency(pilot, n: int) -> list[float]:
    app = pilot.app
    prompt = app.query_one("#prompt")
    out = []
    for i in range(n):
        key = events.Key("x", "x") if i % 2 == 0 else events.Key("backspace", None)
        before = prompt.value
        start = time.perf_counter()
        app.post_message(key)
        while prompt.value == before:
            await asyncio.sleep(0.0005)
        out.append(time.perf_counter() - start)
        await asyncio.sleep(0.02)
    return out


async def loop_lag(seconds: float) -> list[float]:
    lags = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - start - 0.01)
    return lags


async def bench(model: str | None, samples: int, keys: int) -> dict:
    app = make_app(model_spec=model)
    report: dict = {}
    async with app.run_test(size=(120, 40)) as pilot:
        t0 = time.perf_counter()
        await wait(pilot, lambda: app.model_info is not None)
        report["model"] = app.model_info.name
        report["load_s"] = round(time.perf_counter() - t0, 2)
        await wait(pilot, lambda: bool(app.query_one("#strip").tokens))
        app.query_one("#prompt").focus()
        await pilot.press("end")  # focusing selects all; type at the end instead
        report["keys_idle"] = summary(await key_latency(pilot, keys))
        report["loop_lag_idle"] = summary(await loop_lag(2.0))
        app.query_one("#samples").value = str(samples)
        await pilot.press("ctrl+r")  # the all-tokens view (the default): the longest trace
        if (app.trace_screen.run is None or app.trace_screen.run.ended):
            raise SystemExit(f"the run did not start: {[n.message for n in app._notifications]}")
        await wait(pilot, lambda: app.trace_screen.run.progress.done > 0)
        app.query_one("#prompt").focus()
        await pilot.press("end")
        report["keys_busy"] = summary(await key_latency(pilot, keys))
        report["loop_lag_busy"] = summary(await loop_lag(5.0))
        tabs, content = [], app.query_one("#tabs")
        tab_keys = {"tab-grid": "f2", "tab-table": "f3", "tab-log": "f4"}
        for tab in ("tab-table", "tab-grid", "tab-log", "tab-grid") * 3:
            start = time.perf_counter()
            app.post_message(events.Key(tab_keys[tab], None))
            while content.active != tab:
                await asyncio.sleep(0.0005)
            tabs.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
        report["tab_switch_busy"] = summary(tabs)
        report["cells_done_before_cancel"] = f"{app.trace_screen.run.progress.done}/{app.trace_screen.run.progress.total}"
        report["cells_per_s"] = round(app.trace_screen.run.progress.rate or 0.0, 2)
        start = time.perf_counter()
        app.post_message(events.Key("escape", None))
        await wait(pilot, lambda: (app.trace_screen.run is None or app.trace_screen.run.ended), 60)
        report["cancel_s"] = round(time.perf_counter() - start, 3)
        # one redraw of each view at this size
        # a whole trace in the app, and the CPU time the UI thread spent drawing it
        app.query_one("#samples").value = str(samples)
        ui_cpu = time.thread_time()
        await pilot.press("ctrl+r")
        await wait(pilot, lambda: (app.trace_screen.finished["all"] or (None, None))[1] is not None and (app.trace_screen.run is None or app.trace_screen.run.ended))
        report["trace_in_app_s"] = round((app.trace_screen.finished["all"] or (None, None))[1].seconds, 1)
        report["ui_thread_cpu_s"] = round(time.thread_time() - ui_cpu, 1)
        app.query_one("#samples").value = "1"
        await pilot.press("ctrl+r")
        await wait(pilot, lambda: (app.trace_screen.finished["all"] or (None, None))[1] is not None and (app.trace_screen.run is None or app.trace_screen.run.ended))
        await pilot.pause(0.3)
        for mode in ("all", "positions"):
            if mode == "positions":
                await pilot.press("ctrl+o", "ctrl+r")
                await wait(pilot, lambda: (app.trace_screen.finished["positions"] or (None, None))[1] is not None)
                await pilot.pause(0.3)
            plot = app.query_one(GridPlot)
            times = []
            for _ in range(10):
                start = time.perf_counter()
                plot.render()
                times.append(time.perf_counter() - start)
            report[f"redraw_{mode}_{plot.size.width}x{plot.size.height}"] = summary(times)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M)")
    parser.add_argument("--samples", type=int, default=10, help="noise samples of the busy run")
    parser.add_argument("--keys", type=int, default=30, help="key presses per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as config:
        import os

        os.environ["TRACER_TUI_CONFIG_DIR"] = config  # leave the user's theme choice alone
        report = asyncio.run(bench(args.model, args.samples, args.keys))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for key, value in report.items():
        if isinstance(value, dict):
            value = f"median {value['median_ms']} ms, p90 {value['p90_ms']} ms, max {value['max_ms']} ms (n={value['n']})"
        print(f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
