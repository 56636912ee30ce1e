"""Per-cell uncertainty in noise mode: the std over the noise samples and the 95% Student-t interval
of the mean, against a hand computation over the oracle's per-sample values."""

import math

from tracer.core.tracing import run_trace
from tracer.events import CellsDone
from tracer.metrics import interval_grids, mean_interval, t_quantile_975
from tracer.types import TraceRequest

import numpy as np
import pytest
from oracle import oracle_trace

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (9, 2.262), (29, 2.045), (30, 2.042),
                                          (100, 1.984), (10**6, 1.960)])
def test_t_quantile_matches_the_tables(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_to_many_digits():
    # known to 9 digits (R: qt(0.975, df))
    assert t_quantile_975(1) == pytest.approx(12.7062047362, abs=1e-8)
    assert t_quantile_975(9) == pytest.approx(2.2621571628, abs=1e-9)
    assert t_quantile_975(29) == pytest.approx(2.0452296421, abs=1e-9)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_mean_interval_by_hand():
    values = [0.2, 0.4, 0.9, 0.5]
    mean, std, low, high = mean_interval(values)
    assert mean == pytest.approx(0.5)
    hand_std = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 3)
    assert std == pytest.approx(hand_std)
    half = 3.182446305284263 * hand_std / 2  # t(0.975, 3) * std / sqrt(4)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    one = mean_interval([0.3])
    assert one[0] == 0.3 and all(math.isnan(x) for x in one[1:])


def test_interval_grids_reduce_in_float64():
    probs = np.array([[0.1, 0.3, 0.2], [0.5, 0.5, 0.5]], dtype=np.float32)
    stats = interval_grids(probs, probs * 10)
    for i in range(2):
        mean, std, low, high = mean_interval(probs[i].astype(np.float64))
        assert stats["prob"][i] == mean and stats["prob_std"][i] == std
        assert stats["prob_low"][i] == low and stats["prob_high"][i] == high
    assert stats["prob_std"][1] == 0 and stats["logit_diff_std"][0] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # the packed forward and the generic one
@pytest.mark.parametrize("positions", ["all", (2, -1)])
def test_cell_spread_equals_the_oracles_samples(tracers, arch, positions):
    tracer, oracle_lm = tracers(arch)
    N = 4
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=N, window=3, seed=3, positions=positions)
    events = []
    result = run_trace(tracer, req, on_event=events.append)
    T = len(result.tokens)
    oracle_positions = "all" if positions == "all" else [2, T - 1]
    expected, p_clean, p_corrupt, _ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=N, window=3,
                                                   seed=3, noise_std=result.noise_std, positions=oracle_positions)
    t = t_quantile_975(N - 1)
    for kind in req.kinds:
        g = result.grids[kind]
        assert set(g) == {"prob", "recovery", "logit_diff", "prob_std", "prob_low", "prob_high", "logit_diff_std"}
        samples = expected[kind]["prob_samples"]  # [rows, layers, N], float64 softmax of float32 logits
        std = samples.std(axis=2, ddof=1)
        mean = samples.mean(axis=2)
        np.testing.assert_allclose(g["prob_std"], std, atol=2e-6, err_msg=f"{arch} {kind}")
        np.testing.assert_allclose(g["prob_low"], mean - t * std / math.sqrt(N), atol=1e-5)
        np.testing.assert_allclose(g["prob_high"], mean + t * std / math.sqrt(N), atol=1e-5)
        np.testing.assert_allclose(g["logit_diff_std"], expected[kind]["logit_diff_samples"].std(axis=2, ddof=1),
                                   atol=1e-4)
        assert np.max(std) > 1e-4  # the samples differ: the test could fail
        # the interval holds the mean
        assert np.all(np.array(g["prob_low"]) <= np.array(g["prob"]))
        assert np.all(np.array(g["prob"]) <= np.array(g["prob_high"]))
    if positions == "all":
        # a token before the subject equals the corrupted run: its spread is the corrupted run's
        corrupted_std = np.std(expected["hidden"]["prob_samples"][0, 0], ddof=1)
        assert result.grids["hidden"]["prob_std"][0] == pytest.approx([corrupted_std] * tracer.n_layers, abs=2e-6)
    assert any(isinstance(e, CellsDone) for e in events)


def test_substitution_has_no_spread(tracers):
    from tracer.inputs.prompts import tokenize

    tracer, _ = tracers("llama")
    n = len(tokenize(tracer.tokenizer, PROMPT))
    corrupted = next(PROMPT.replace(SUBJECT, o) for o in ("Louvre Museum", "Space Needle", "Big Ben", "Colosseum")
                     if len(tokenize(tracer.tokenizer, PROMPT.replace(SUBJECT, o))) == n)
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, corrupted_prompt=corrupted, kinds=("hidden",)))
    assert set(result.grids["hidden"]) == {"prob", "recovery", "logit_diff"}


def test_one_noise_sample_has_no_spread(tracers):
    tracer, _ = tracers("llama")
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=1, positions="subject-last"))
    g = result.grids["hidden"]
    assert all(isinstance(v, float) for v in g["prob"][0])
    for key in ("prob_std", "prob_low", "prob_high", "logit_diff_std"):
        assert g[key] == [[None] * tracer.n_layers]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # the packed forward and the generic one
def test_adaptive_samples_equal_the_oracles_first_samples(tracers, arch):
    """Adaptive samples (ci_width): each cell's P is the mean of the oracle's first n samples, n is
    3, 6, 12 or the maximum, a cell stopped early has an interval no wider than the target, and a
    cell that went on was wider at the previous count."""
    tracer, oracle_lm = tracers(arch)
    N, width = 16, 0.004
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=N, window=3, seed=3, ci_width=width)
    events = []
    result = run_trace(tracer, req, on_event=events.append)
    expected, *_ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=N, window=3, seed=3,
                                noise_std=result.noise_std, positions="all")
    for e in (e for e in events if isinstance(e, CellsDone)):  # each cell's count as it arrives
        assert e.samples == [result.grids[e.kind]["samples"][r][c] for r, c in e.cells]
    counts_seen = set()
    for kind in req.kinds:
        g = result.grids[kind]
        samples = expected[kind]["prob_samples"]  # [rows, layers, N]
        n = np.array(g["samples"])
        counts_seen |= set(n.ravel().tolist())
        for (row, layer), count in np.ndenumerate(n):
            count = int(count)
            first = samples[row, layer, :count]
            assert g["prob"][row][layer] == pytest.approx(first.mean(), abs=2e-6)
            half = t_quantile_975(count - 1) * first.std(ddof=1) / math.sqrt(count)
            if count < N:
                assert 2 * half <= width + 1e-6
            if count > 3 and row >= 2:  # went on: it was wider before (rows 0-1 equal the corrupted run, all N)
                prev = count // 2 if count < N else max(c for c in (3, 6, 12) if c < count)
                before = samples[row, layer, :prev]
                assert 2 * t_quantile_975(prev - 1) * before.std(ddof=1) / math.sqrt(prev) > width - 1e-6
    assert counts_seen <= {3, 6, 12, N} and len(counts_seen) >= 2  # some cells stopped early, some went on


def test_adaptive_samples_refuse_substitution():
    from tracer.errors import InputError

    with pytest.raises(InputError, match="adaptive samples .* noise corruption only"):
        TraceRequest(PROMPT, SUBJECT, corrupted_prompt="The Louvre is located in the city of", ci_width=0.02)
    with pytest.raises(InputError, match=r"ci_width must be a number between 0 and 1 \(got 2\)"):
        TraceRequest(PROMPT, SUBJECT, ci_width=2)


def _half_width(samples: np.ndarray) -> float:
    """Half the 95% Student-t interval of the mean of `samples` (float64)."""
    return t_quantile_975(len(samples) - 1) * samples.std(ddof=1) / math.sqrt(len(samples))


def _natural_count(samples: np.ndarray, width: float) -> int:
    """The samples an adaptive run gives a cell (3, 6, 12, ... up to all): the first count whose
    interval is at most `width` wide, from the oracle's per-sample values."""
    count = 3
    while count < len(samples) and 2 * _half_width(samples[:count]) > width:
        count = min(2 * count, len(samples))
    return count


def _check_settled(result, expected, kinds, most: int, width: float, cap: int) -> int:
    """Every cell of a settled adaptive trace: P the mean of the oracle's first n samples, n at most
    `cap` (or `most`, the corrupted run's rows), narrow where n < cap. Returns the cells kept at
    `cap` samples with an interval still wider than `width` (those settled)."""
    settled = 0
    for kind in kinds:
        g = result.grids[kind]
        for (row, layer), count in np.ndenumerate(np.array(g["samples"])):
            count = int(count)
            first = expected[kind]["prob_samples"][row, layer, :count]
            assert g["prob"][row][layer] == pytest.approx(first.mean(), abs=2e-6)
            assert count <= cap or count == most
            wide = g["prob_high"][row][layer] - g["prob_low"][row][layer] > width
            if count < cap:
                assert not wide, (kind, row, layer, count)
            settled += count == cap and wide
    return settled


def test_settled_before_the_first_round_every_cell_keeps_its_first_samples(tracers):
    """settle set before the trace: the first round still runs (no cell without samples), then every
    cell is delivered with its 3 samples, the trace finishes, and a warning counts the cells kept."""
    import threading

    from tracer.events import Log

    tracer, oracle_lm = tracers("llama")
    N, width = 16, 0.004
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=N, window=3, seed=3, ci_width=width)
    settle, events = threading.Event(), []
    settle.set()
    result = run_trace(tracer, req, on_event=events.append, settle=settle)
    expected, *_ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=N, window=3, seed=3,
                                noise_std=result.noise_std, positions="all")
    counts = {int(n) for kind in req.kinds for row in result.grids[kind]["samples"] for n in row}
    assert counts == {3, N}  # N: the rows equal to the corrupted run, which cost nothing
    settled = _check_settled(result, expected, req.kinds, N, width, cap=3)
    assert settled > 0
    stopped = [w for w in result.warnings if w.code == "refining-stopped"]
    assert len(stopped) == 1 and f"{settled} cells at 3 samples" in stopped[0] and "wider than 0.004" in stopped[0]
    assert any(isinstance(e, Log) and e.text == stopped[0] for e in events)


# the packed forward and the generic one, each at a width where some cells stop after a later round
# and others go on (the tiny gpt2's samples spread more)
@pytest.mark.parametrize("arch, width", [("llama", 0.004), ("gpt2", 0.01)])
def test_settled_after_a_later_round_cells_keep_that_rounds_samples(tracers, arch, width):
    """settle set while a later round's cells arrive: the cells still wide after it keep that round's
    samples (the oracle's first n), the others what they had reached; no cell gets more."""
    import threading

    from tracer.events import CellsDone

    tracer, oracle_lm = tracers(arch)
    N = 16
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=N, window=3, seed=3, ci_width=width)
    first = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=1, positions="subject-last"))
    expected, *_ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=N, window=3, seed=3,
                                noise_std=first.noise_std, positions="all")
    b = first.subject_range[0]  # rows before the subject equal the corrupted run: never refined
    natural = {kind: np.apply_along_axis(_natural_count, 2, expected[kind]["prob_samples"], width)
               for kind in req.kinds}
    rounds = sorted({int(n) for kind in req.kinds for n in natural[kind][b:].ravel()})
    assert len(rounds) >= 3 and rounds[0] == 3, rounds  # a round after the first that leaves cells behind
    cap = rounds[1]
    settle = threading.Event()

    def on_event(event):  # round `cap`'s cells arrive: the user's word
        if isinstance(event, CellsDone) and any(r >= b and natural[event.kind][r, c] == cap for r, c in event.cells):
            settle.set()

    result = run_trace(tracer, req, on_event=on_event, settle=settle)
    assert settle.is_set()
    settled = _check_settled(result, expected, req.kinds, N, width, cap=cap)
    assert settled > 0
    stopped = [w for w in result.warnings if w.code == "refining-stopped"]
    assert len(stopped) == 1 and stopped[0].startswith(f"refining stopped at the user's word: {settled} cells at {cap} samples")


def test_settle_is_ignored_without_adaptive_samples(tracers):
    import threading

    tracer, _ = tracers("llama")
    settle = threading.Event()
    settle.set()
    result = run_trace(tracer, TraceRequest(PROMPT, SUBJECT, kinds=("hidden",), samples=4, seed=3), settle=settle)
    assert "samples" not in result.grids["hidden"] and not [w for w in result.warnings if w.code == "refining-stopped"]
    assert all(v is not None for row in result.grids["hidden"]["prob"] for v in row)


def test_settled_within_a_round_cells_keep_what_their_forwards_gave(tracers, monkeypatch):
    """settle set while the second round's forwards run (after its first): no new forward starts, the
    ones in flight finish; cells keep 3 or 6 samples (the oracle's first n) as their forward ran or
    not, and the warning counts both."""
    import threading

    from tracer.core import tracing

    tracer, oracle_lm = tracers("llama")
    N, width = 16, 0.002  # no cell of the tiny llama is that narrow at 6 samples
    req = TraceRequest(PROMPT, SUBJECT, kinds=("hidden", "mlp"), samples=N, window=3, seed=3, ci_width=width)
    settle, rounds, lock = threading.Event(), [], threading.Lock()
    real = tracing.run_chunk_samples

    def chunk_then_settle(pm, chunk, run):  # on the workers: the second round's first forward settles
        out = real(pm, chunk, run)
        with lock:
            if not any(r is run for r in rounds):
                rounds.append(run)
            if len(rounds) == 2:
                settle.set()
        return out

    monkeypatch.setattr(tracing, "run_chunk_samples", chunk_then_settle)
    result = run_trace(tracer, req, settle=settle)
    assert len(rounds) == 2  # no third round
    expected, *_ = oracle_trace(oracle_lm, PROMPT, SUBJECT, kinds=req.kinds, samples=N, window=3, seed=3,
                                noise_std=result.noise_std, positions="all")
    settled = {3: 0, 6: 0}
    for kind in req.kinds:
        g = result.grids[kind]
        for (row, layer), count in np.ndenumerate(np.array(g["samples"])):
            count = int(count)
            first = expected[kind]["prob_samples"][row, layer, :count]
            assert g["prob"][row][layer] == pytest.approx(first.mean(), abs=2e-6)
            assert count in (3, 6, N)
            if count < N and g["prob_high"][row][layer] - g["prob_low"][row][layer] > width:
                settled[count] += 1
    assert settled[3] > 0 and settled[6] > 0  # the round was cut short: some cells got its samples, some not
    stopped = [w for w in result.warnings if w.code == "refining-stopped"]
    assert len(stopped) == 1
    kept = ", ".join(f"{n} cell{'s' if n != 1 else ''} at {count} samples" for count, n in settled.items())
    assert stopped[0].startswith(f"refining stopped at the user's word: {kept} (")
