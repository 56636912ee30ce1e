"""Cells, their grouping into batched forwards, and one patched forward.

A cell is (kind, restored layers, restored positions, grid row/column). Rows of
one forward are (cell, noise sample). Work that cannot change is never done:
- a cell's *start layer* is the first layer whose computation differs from the
  corrupted run (l+1 for `hidden` at l, the window's first layer otherwise);
  a forward's rows share a start layer and every layer below it is replayed
  from the cached corrupted run (MLX's lazy graph never computes them);
- positions before a chunk's first restored position equal the corrupted run
  at every layer: their keys/values come from the corrupted run's cache and
  only the later positions are computed (`tmin`);
- logits are computed at the last position only (the last k positions for a target of k
  tokens, teacher-forced: its first k - 1 tokens are appended to the prompt).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from ..settings import severed_name, window_layers
from .fastops import logsumexp
from .patching import PatchableModel, PrefixCache, TapPlan


@dataclass
class Cell:
    kind: str
    row: int  # grid row
    layer: int  # grid column
    layers: tuple[int, int]  # restored layers [l0, l1)
    positions: tuple[int, ...]
    sever: str | None = None  # hidden cells only: this kind's outputs above the layer stay corrupted
    grid: str = ""  # the grid the cell belongs to (default: its kind)

    def __post_init__(self):
        self.grid = self.grid or self.kind

    def frozen(self, n_layers: int) -> range:
        """Layers whose `sever` outputs are held at their corrupted values at the cell's positions:
        those above the restored layer (freezing lower ones changes nothing,
        docs/method.md#d66-our-same-draw-definition)."""
        return range(self.layers[1], n_layers) if self.sever else range(0)

    @property
    def start(self) -> int:
        return self.layers[1] if self.kind == "hidden" else self.layers[0]


@dataclass
class Chunk:
    start: int
    tmin: int  # first computed position
    cells: list[Cell]


@dataclass
class Corrupted:
    """Everything a patched forward needs from the clean and corrupted runs (all evaluated)."""

    ids: list[int]
    n_samples: int
    embeds: mx.array | None  # [N, T, D] the noised embeddings, or None (substitution)
    states: dict  # kind -> [L x [N, T, D]] corrupted outputs
    kv: list | None  # [L x (keys, values)] of the corrupted run, [N, heads, T, hd]
    clean: dict  # kind -> [L x [T, D]] clean outputs
    target_id: int  # the target's first token
    top_id: int  # the logit difference's reference: the corrupted run's strongest other token
    kv_rows: list | None = None  # kv as [L x (keys, values)] [N*T, heads*hd] rows (packed forward)
    cancel: threading.Event | None = None  # checked between layers: a cancel stops a forward midway
    target_ids: tuple[int, ...] = ()  # every target token (teacher forcing); () means (target_id,)

    @property
    def targets(self) -> tuple[int, ...]:
        return tuple(self.target_ids) or (self.target_id,)

    def subset(self, first: int, stop: int) -> "Corrupted":
        """The same runs restricted to noise samples [first, stop) (adaptive samples)."""
        return replace(
            self, n_samples=stop - first, kv_rows=None,
            embeds=None if self.embeds is None else self.embeds[first:stop],
            states={kind: [s[first:stop] for s in layers] for kind, layers in self.states.items()},
            kv=None if self.kv is None else [(k[first:stop], v[first:stop]) for k, v in self.kv],
        )

    @property
    def n_last(self) -> int:
        """Positions whose logits a forward reads: one per target token (ids end with the
        target's first k - 1 tokens)."""
        return len(self.targets)


def make_cells(kinds, positions, n_tokens: int, n_layers: int, window: int, sever=()) -> list[Cell]:
    """Every cell of the grids: per kind, then per severed kind (hidden cells with `sever` set)."""
    series = [(kind, None) for kind in kinds] + [("hidden", s) for s in sever]
    cells = []
    for kind, severed in series:
        grid = severed_name(severed) if severed else kind
        for layer in range(n_layers):
            span = window_layers(kind, layer, window, n_layers)
            if positions == "all":
                cells += [Cell(kind, t, layer, span, (t,), severed, grid) for t in range(n_tokens)]
            else:
                cells.append(Cell(kind, 0, layer, span, tuple(positions), severed, grid))
    return cells


def make_chunks(cells: list[Cell], n_samples: int, n_tokens: int, *, max_rows: int,
                target_tokens: int, use_prefix: bool, packed: bool = False) -> list[Chunk]:
    """Group cells by start layer; within a group, cells with later first positions
    go together so each forward computes few positions, until it holds about
    `target_tokens` token-rows (large enough for efficient GEMMs). A packed forward
    (packed.py) computes each row from its own first position; a dense one from the
    chunk's. Order: the cheapest forward, then the costliest first."""
    by_start = defaultdict(list)
    for cell in cells:
        by_start[cell.start].append(cell)
    chunks = []
    for start in sorted(by_start, reverse=True):
        group = sorted(by_start[start], key=lambda c: -min(c.positions))
        current: list[Cell] = []
        tokens = 0
        for cell in group:
            tmin = min(cell.positions) if use_prefix else 0
            rows = (len(current) + 1) * n_samples
            tokens_with = tokens + n_samples * (n_tokens - tmin) if packed else rows * (n_tokens - tmin)
            if current and (rows > max_rows or tokens_with > target_tokens):
                chunks.append(_chunk(start, current, use_prefix))
                current, tokens_with = [], n_samples * (n_tokens - tmin)
            current.append(cell)
            tokens = tokens_with
        if current:
            chunks.append(_chunk(start, current, use_prefix))
    # the cheapest forward first, so the first cells arrive at once; then the costliest first
    # (most layers, most positions), so the workers finish together on small ones
    return chunks[:1] + sorted(chunks[1:], key=lambda c: (c.start, c.tmin))


def _chunk(start: int, cells: list[Cell], use_prefix: bool) -> Chunk:
    return Chunk(start, min(min(c.positions) for c in cells) if use_prefix else 0, cells)


def token_layers(chunk: Chunk, n_samples: int, n_tokens: int, n_layers: int, packed: bool = False,
                 head: int = 0) -> int:
    """Block evaluations (token x layer) a chunk costs: the work measure of a schedule.
    Packed: each cell's rows from its own first position, and the last layer at the
    last position only. Each row's logits cost `head` more (tracer.work.head_layers)."""
    return sum(cell_token_layers(chunk, cell, n_samples, n_tokens, n_layers, packed, head) for cell in chunk.cells)


def cell_token_layers(chunk: Chunk, cell: Cell, n_samples: int, n_tokens: int, n_layers: int,
                      packed: bool = False, head: int = 0) -> int:
    """One cell's share of its chunk's token_layers (its n_samples rows): from the chunk's start
    layer, over the chunk's positions (dense) or the cell's own (packed, the last layer at the last
    position only), and each row's logits (`head`)."""
    layers = max(0, n_layers - chunk.start)
    if not packed:
        return n_samples * ((n_tokens - chunk.tmin) * layers + head)
    if layers == 0:
        return n_samples * head
    return n_samples * ((n_tokens - min(cell.positions)) * (layers - 1) + 1 + head)


def run_chunk_samples(pm: PatchableModel, chunk: Chunk, run: Corrupted) -> tuple[np.ndarray, np.ndarray]:
    """One forward for the chunk's cells x samples.

    Args:
        pm: the patchable model.
        chunk: the cells (sharing a start layer) and the first computed position.
        run: the clean and corrupted runs.

    Returns:
        (P(target), logit difference) per cell and sample: two float32 arrays [cells, N].
    """
    cells, start, tmin, N = chunk.cells, chunk.start, chunk.tmin, run.n_samples
    if pm.packed is not None and run.kv_rows is not None:
        logits = pm.packed.logits(run, cells, start, last=run.n_last).astype(mx.float32)
        return _summarize(logits, run, len(cells), N)
    T = len(run.ids)
    n_rows = len(cells) * N
    sample_of_row = mx.array(np.tile(np.arange(N), len(cells)))
    plans: dict = {}
    for layer in range(min(start, pm.n_layers)):
        plans[("hidden", layer)] = TapPlan(replay=run.states["hidden"][layer][sample_of_row, tmin:])
    def new_mask():
        return np.zeros((n_rows, T - tmin, 1), dtype=bool)

    masks, freezes = defaultdict(new_mask), defaultdict(new_mask)
    for c_i, cell in enumerate(cells):
        rows, cols = slice(c_i * N, (c_i + 1) * N), [p - tmin for p in cell.positions]
        for layer in range(*cell.layers):
            masks[(cell.kind, layer)][rows, cols, 0] = True
        for layer in cell.frozen(pm.n_layers):
            freezes[(cell.sever, layer)][rows, cols, 0] = True
    for (kind, layer), mask in masks.items():
        plan = plans.setdefault((kind, layer), TapPlan())
        plan.mask, plan.clean = mx.array(mask), run.clean[kind][layer][tmin:]
    for (kind, layer), mask in freezes.items():
        plan = plans.setdefault((kind, layer), TapPlan())
        plan.freeze, plan.frozen = mx.array(mask), run.states[kind][layer][sample_of_row, tmin:]
    ids = mx.array([run.ids[tmin:]] * n_rows)
    embeds = None if run.embeds is None or start > 0 else run.embeds[sample_of_row, tmin:]
    cache = None
    if tmin > 0:
        cache = [PrefixCache(k[sample_of_row, :, :tmin], v[sample_of_row, :, :tmin]) for k, v in run.kv]
    logits = pm.forward(ids, embeds=embeds, plans=plans, cache=cache, cancel=run.cancel, last=run.n_last)
    return _summarize(logits.astype(mx.float32), run, len(cells), N)


def sample_scores(logits: mx.array, targets, top_id: int) -> tuple[mx.array, mx.array]:
    """Per row: P(target) and the logit difference, in float32.

    Args:
        logits: [rows, V] (a one-token target) or [rows, k, V], the logits at the last k positions
            (the prompt's last, then each teacher-forced target token's).
        targets: the k target token ids.
        top_id: the logit difference's reference token.

    Returns:
        (P(target) [rows]: the product of the k tokens' softmax probabilities; the first target
        token's logit minus top_id's at the prompt's last position [rows]).
    """
    if logits.ndim == 2:
        logits = logits[:, None, :]
    rows, k, V = logits.shape
    targets = list(targets)
    flat = logits.reshape(rows * k, V)
    lse = logsumexp(flat)[:, 0].reshape(rows, k)
    if k == 1:
        picked = logits[:, 0, targets[0]][:, None]  # the target's column only
    else:
        picked = mx.take_along_axis(logits, mx.array(targets)[None, :, None], axis=2)[:, :, 0]
    p_target = mx.exp((picked - lse).sum(axis=1))
    diff = logits[:, 0, targets[0]] - logits[:, 0, top_id]
    return p_target, diff


def _summarize(logits: mx.array, run: Corrupted, n_cells: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    p_target, diff = sample_scores(logits, run.targets, run.top_id)
    mx.eval(p_target, diff)
    return np.array(p_target).reshape(n_cells, N), np.array(diff).reshape(n_cells, N)


# Token-rows per forward, measured on this 2-core CPU (benchmarks/trace_speed.py). Dense: 256
# beat 512 and 1024, since smaller forwards group cells by first restored position more tightly,
# which saves more block evaluations than the larger GEMMs gain. Packed forwards waste nothing on
# grouping: with one eval per layer (packed.py), 768 and 1024 (34.8-35.7 s) beat 512 (38-40 s);
# 768 keeps the last-position logits smaller. A GPU wants big batches.
CPU_TARGET_TOKENS = 256
CPU_PACKED_TARGET_TOKENS = 768
GPU_TARGET_TOKENS = 8192


def batch_limits(model, n_tokens: int, max_rows: int | None = None, packed: bool = False) -> tuple[int, int]:
    """(max rows, target token-rows) per forward, from the model's widths and the memory available
    (RAM on CPU, the GPU's own where MLX reports it): see batch_limits_for."""
    args = getattr(model, "args", None)
    hidden = getattr(args, "hidden_size", 1024) or 1024
    ffn = getattr(args, "intermediate_size", 4 * hidden) or 4 * hidden
    vocab = getattr(args, "vocab_size", 50000) or 50000
    available = device_memory_bytes()
    if available is None:
        available = free_memory_bytes()
    return batch_limits_for(hidden, ffn, vocab, n_tokens, available, max_rows=max_rows, packed=packed,
                            on_cpu=mx.default_device() == mx.cpu)


def activation_bytes_per_token(hidden: int, ffn: int) -> int:
    """Bytes alive per token-row during one block of a forward (float32)."""
    return 4 * (10 * hidden + 4 * ffn)


def logit_bytes_per_row(vocab: int) -> int:
    """Bytes per row for the last position's logits and their softmax (float32)."""
    return 4 * 3 * vocab


def batch_limits_for(hidden: int, ffn: int, vocab: int, n_tokens: int, available: int, *,
                     max_rows: int | None = None, packed: bool = False, on_cpu: bool = True) -> tuple[int, int]:
    """(max rows, target token-rows) per forward for a model of these widths.

    A forward may use an eighth of the memory available. The target is the device's preferred
    batch (CPU_TARGET_TOKENS / CPU_PACKED_TARGET_TOKENS / GPU_TARGET_TOKENS) unless that
    eighth binds first: then as many token-rows as fit, fewer for a wider model.

    Args:
        hidden, ffn, vocab: the model's widths.
        n_tokens: the prompt's tokens (a forward holds at least one row of them).
        available: bytes available (RAM on CPU, the GPU's memory on a GPU).
        max_rows: a fixed row limit, or None for the memory's.
        packed: packed forwards (packed.py) on CPU prefer larger batches.
        on_cpu: the CPU's preferred batch, or the GPU's.

    Returns:
        (max rows, target token-rows).
    """
    per_token = activation_bytes_per_token(hidden, ffn)
    per_row = n_tokens * per_token + logit_bytes_per_row(vocab)
    budget = max(64 << 20, available // 8)
    rows = max_rows or max(1, int(budget // per_row))
    preferred = GPU_TARGET_TOKENS
    if on_cpu:
        preferred = CPU_PACKED_TARGET_TOKENS if packed else CPU_TARGET_TOKENS
    target = max(n_tokens, min(preferred, int(budget // per_token)))
    return rows, target


# Token-rows per batch when recording the corrupted run (its noise samples): large enough for
# efficient GEMMs, small enough that one batch's activations stay small and one block of a batch
# takes well under the 0.5 s a cancel may wait (4,096 took 0.67 s on a loaded 2-core machine).
RECORD_TOKENS = 1024


def record_batch_rows(n_tokens: int) -> int:
    """Rows (noise samples) per batch of the corrupted run's recording."""
    return max(1, RECORD_TOKENS // max(1, n_tokens))


def recording_bytes(n_samples: int, n_tokens: int, n_layers: int, hidden: int, kv_per_token: int,
                    n_kinds: int = 1, itemsize: int = 4, packed: bool = False) -> int:
    """Bytes the recorded corrupted run holds for a trace: `n_kinds` kinds' outputs at every
    layer [N, T, D]; the keys/values (`kv_per_token`: elements per token over all layers, keys
    and values), twice when `packed` (packed.py copies them into rows once); the noised
    embeddings [N, T, D]."""
    per_token = (n_kinds * n_layers * hidden + kv_per_token * (2 if packed else 1) + hidden) * itemsize
    return n_samples * n_tokens * per_token


def device_memory_bytes() -> int | None:
    """Bytes the default device can still use: the RAM available on CPU; on a GPU, CUDA's free
    memory as MLX reports it (`free_memory`, NVML's view, other processes included), else the memory
    MLX reports for the device (Metal's recommended working set, its total) less what MLX holds now;
    None where MLX reports none."""
    if mx.default_device() == mx.cpu:
        return free_memory_bytes()
    info_of = getattr(mx, "device_info", None)
    info = info_of() if info_of is not None else {}
    if isinstance(info.get("free_memory"), int) and info["free_memory"] > 0:
        return int(info["free_memory"]) + mx.get_cache_memory()  # MLX's cache is reusable
    total = next((info[k] for k in ("max_recommended_working_set_size", "memory_size", "total_memory")
                  if isinstance(info.get(k), int) and info[k] > 0), None)
    if total is None:
        return None
    return max(0, int(total) - mx.get_active_memory())


def free_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30
