"""The work a trace reports (issue 24.4): every progress event carries token-layers done and in all
(core.tracing.WorkMeter), checked here against a count written out from the schedule's rules."""

from __future__ import annotations

from tracer.events import CellsDone, Recording, Started
from tracer.types import TraceRequest
from tracer.work import ESTIMATE_WORK, head_layers, trace_work

import pytest

PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"


def expected_work(n_tokens: int, n_layers: int, samples: int, first_corrupt: int, kinds, window: int,
                  estimate: bool, head: int) -> dict:
    """Token-layers of each phase, counted cell by cell: the clean run (every position), the corrupted
    runs (from the first corrupted token), the estimate (3 x a forward of every sample), and per
    cell the packed forward: from its first computed layer over the tokens from its own, the last
    layer at the last position only; cells at tokens before the corruption are not run. Every row
    run (each recorded run, each sample of the estimate and of a cell) adds its logits: `head`."""
    cells = sum(expected_cell(kind=kind, token=t, layer=layer, T=n_tokens, L=n_layers, window=window,
                              samples=samples, first=first_corrupt, head=head)
                for kind in kinds for layer in range(n_layers) for t in range(n_tokens))
    return {"clean": n_tokens * n_layers + head, "corrupted": samples * ((n_tokens - first_corrupt) * n_layers + head),
            "estimate": ESTIMATE_WORK * samples * (n_tokens * n_layers + head) if estimate else 0, "cells": cells}


@pytest.mark.parametrize("estimate", ["off", "progressive"])
def test_the_trace_events_carry_its_work_counted_cell_by_cell(tiny_tracer, estimate):
    from tracer.core.tracing import run_trace

    assert tiny_tracer.patchable.packed is not None  # the count above is the packed forward's
    request = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp", "attn"), samples=3, window=3, estimate=estimate)
    tokens, span = tiny_tracer.tokenize(PROMPT, SUBJECT)
    T, L = len(tokens), tiny_tracer.n_layers
    events = []
    result = run_trace(tiny_tracer, request, on_event=events.append)
    head = tiny_tracer.head_layers
    anatomy = tiny_tracer.patchable.anatomy  # the head's weights over one block's, from the tiny model's widths
    assert head == head_layers(anatomy.vocab_size, anatomy.hidden_size, anatomy.block_weights()) > 0
    want = expected_work(T, L, 3, span[0], request.kinds, 3, estimate != "off", head)
    total = sum(want.values())
    started = next(e for e in events if isinstance(e, Started))
    assert started.work_total == total
    assert trace_work(T, L, settings=request, free_before=span[0], head=head) == total  # the app's prediction agrees
    recording = [e for e in events if isinstance(e, Recording)]
    assert [e.work_total for e in recording] == [total] * len(recording)
    assert recording[0].work_done == 0 and recording[-1].work_done == want["clean"] + want["corrupted"]
    clean_end = [e for e in recording if e.phase == "clean"][-1]
    assert clean_end.work_done == want["clean"]
    cells = [e for e in events if isinstance(e, CellsDone)]
    assert sum(e.work for e in cells) == want["cells"]
    assert [e.work_done for e in cells] == sorted(e.work_done for e in cells)  # never backwards
    assert all(len(e.prob_low) == len(e.prob_high) == len(e.cells) for e in cells)  # noise: each cell's interval
    assert cells[-1].work_done == cells[-1].work_total == total
    for e in cells:  # each event's own cells, counted alone; a progressive trace's previews (its most
        if e.preview:  # important cells ahead, run again later) are not counted in the predicted work
            assert e.work == 0 and estimate == "progressive"
            continue
        one = sum(expected_cell(kind=e.kind, token=r, layer=c, T=T, L=L, window=3, samples=3, first=span[0], head=head)
                  for r, c in e.cells)
        assert e.work == one
    # the cells done before the first forward (restoring the prompt's start) cost nothing
    assert cells[0].work == 0 and all(r < span[0] for r, _ in cells[0].cells)
    assert result.grids  # a whole trace


def expected_cell(*, kind, token, layer, T, L, window, samples, first, head) -> int:
    if token < first:
        return 0
    start = layer + 1 if kind == "hidden" else max(0, layer - window // 2)
    layers = L - start
    return samples * (head + ((T - token) * (layers - 1) + 1 if layers > 0 else 0))


@pytest.mark.parametrize("options", [{}, {"corrupted_prompt": "The Louvre Tower is located in the city of"},
                                     {"positions": "subject-last", "estimate": "progressive"}])
def test_the_predicted_work_is_the_work_the_trace_reports(tiny_tracer, options):
    from tracer.core.tracing import predicted_work, run_trace

    request = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=2, window=3, **options)
    events = []
    run_trace(tiny_tracer, request, on_event=events.append)
    reported = next(e for e in events if isinstance(e, Started)).work_total
    assert predicted_work(tiny_tracer, request) == reported


def test_the_meter_counts_half_of_the_forwards_in_flight_and_never_goes_back():
    from tracer.core.tracing import WorkMeter

    meter = WorkMeter(clean=10, corrupted=30, estimate=0, cells=160, done=40)
    assert meter.shown() == 40
    meter.fly(100)  # a worker's long forward begins: on average half done
    assert meter.shown() == 90
    meter.fly(-100)  # it ends; its cells are delivered kind by kind
    meter.done += 30
    assert meter.shown() == 90  # not back to 70 before the rest of its cells arrive
    meter.done += 70
    assert meter.shown() == 140
    meter.done += 60
    assert meter.shown() == meter.total == 200
