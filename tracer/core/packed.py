"""A packed patched forward for llama-style models: no token computed twice.

The generic forward (patching.PatchableModel) runs a chunk's rows as a dense
[rows, T - tmin, D] batch, so a row whose first restored position is later than
the chunk's `tmin` still computes its earlier positions, and every position is
carried through the last layer although only the last one reaches the logits.
Here a chunk's token-rows are *packed*: row r computes only its positions
>= its own first restored position, laid end to end as [M, D] for every matmul,
norm and MLP. Only attention needs rows: queries, keys and values are gathered
into a padded [rows, T - tmin] layout, positions before a row's first restored
one take the corrupted run's cached keys/values, and the outputs are gathered
back. At the last layer only each row's last position is computed (its keys and
values still come from every position). Rotary embeddings at per-token positions
use precomputed cos/sin tables in one fused kernel (MLX's rope with an offset per
token costs ~3x more on CPU).

The result equals the generic forward up to float rounding; the tests check both
against the oracle. Used for mlx-lm `llama` and `qwen2` models (plain pre-norm
blocks, full attention) whenever the prefix cache is available.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import check_cancel
from ..models.anatomy import unwrap
from .fastops import exp_below, per_thread_compiled

PACKED_MODULES = {"mlx_lm.models.llama", "mlx_lm.models.qwen2"}


def supports_packed(model, anatomy) -> bool:
    if type(model).__module__ not in PACKED_MODULES:
        return False
    inner = getattr(model, "model", None)
    if inner is None or getattr(inner, "swa_idx", None) is not None:
        return False
    for i in range(anatomy.n_layers):
        block = unwrap(anatomy.block(i).get())
        attn = unwrap(block.self_attn)
        if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "rope", "scale")):
            return False
        if any(hasattr(attn, n) for n in ("q_norm", "k_norm")):
            return False
    return True


@dataclass
class _Layout:
    """Where a chunk's packed tokens sit: rows are (cell, sample), row r computes
    positions tmin[r]..T-1, all rows' tokens laid end to end (M in all)."""

    R: int
    M: int
    t0: int  # the chunk's first computed position: queries are padded to [R, T - t0]
    tok_pos: np.ndarray  # [M] position of each token
    tok_row: np.ndarray  # [M] row of each token
    source: mx.array  # [M] row of the corrupted run's [N*T] states each token replays
    to_padded: np.ndarray  # [R*(T-t0)] token at each padded query slot (padding reads token 0)
    from_padded: np.ndarray  # [M] padded query slot of each token
    kv_source: np.ndarray  # [R*T] for each (row, position): a row of [corrupted N*T; computed M]
    last: np.ndarray  # [R] each row's last token
    _gathers: dict = field(default_factory=dict, repr=False)

    def head_gathers(self, heads: int, kv_heads: int) -> tuple[mx.array, mx.array, mx.array]:
        """Indices that gather per-head vectors [*, hd] straight into attention's layouts (no
        transposed copies): queries [M*heads] -> [R, heads, T-t0]; keys/values [(N*T+M)*kv_heads]
        -> [R, kv_heads, T]; outputs [R, heads, T-t0] -> [M, heads]."""
        key = (heads, kv_heads)
        if key not in self._gathers:
            Tq, T = len(self.to_padded) // self.R, len(self.kv_source) // self.R
            per_head = np.arange(heads)[None, :, None]
            q = self.to_padded.reshape(self.R, 1, Tq) * heads + per_head
            kv = self.kv_source.reshape(self.R, 1, T) * kv_heads + np.arange(kv_heads)[None, :, None]
            row, slot = np.divmod(self.from_padded, Tq)
            out = (row[:, None] * heads + np.arange(heads)[None, :]) * Tq + slot[:, None]
            self._gathers[key] = tuple(mx.array(i.reshape(-1)) for i in (q, kv, out))
        return self._gathers[key]

    @classmethod
    def of(cls, cells, N: int, T: int) -> "_Layout":
        R = len(cells) * N
        row_sample = np.tile(np.arange(N), len(cells))
        row_tmin = np.repeat([min(c.positions) for c in cells], N)
        t0 = int(row_tmin.min())
        lengths = T - row_tmin
        first = np.cumsum(lengths) - lengths
        tok_row = np.repeat(np.arange(R), lengths)
        tok_pos = np.concatenate([np.arange(t, T) for t in row_tmin])
        M = len(tok_pos)
        from_padded = tok_row * (T - t0) + tok_pos - t0
        to_padded = np.zeros(R * (T - t0), dtype=np.int64)
        to_padded[from_padded] = np.arange(M)
        pos = np.arange(T)[None, :]
        kv_source = np.where(pos < row_tmin[:, None], row_sample[:, None] * T + pos,
                             N * T + first[:, None] + pos - row_tmin[:, None])
        return cls(R, M, t0, tok_pos, tok_row, mx.array(row_sample[tok_row] * T + tok_pos), to_padded,
                   from_padded, kv_source.reshape(-1), np.cumsum(lengths) - 1)


def _rotate(x, cos, sin, traditional: bool):
    """Rotary embedding of x [M, H, hd] with per-token tables cos/sin [M, 1, hd/2]."""
    if traditional:  # consecutive pairs
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        return mx.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(x.shape)
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    return mx.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)


_rotate_fused = {t: per_thread_compiled(lambda x, c, s, t=t: _rotate(x, c, s, t)) for t in (True, False)}


def _rope_key(rope):
    if type(rope) is nn.RoPE:
        return ("RoPE", rope.dims, rope.traditional, rope.base, rope.scale)
    return id(rope)


class _Rope:
    """A layer's rotary embedding at the given per-token positions."""

    def __init__(self, rope, head_dim: int, positions: np.ndarray):
        self.rope, self.tables = rope, None
        if type(rope) is nn.RoPE and rope.dims == head_dim:
            angles = (positions * rope.scale)[:, None] * rope.base ** (-np.arange(0, head_dim, 2) / head_dim)
            self.tables = (mx.array(np.cos(angles)[:, None, :].astype(np.float32)),
                           mx.array(np.sin(angles)[:, None, :].astype(np.float32)))
            self.positions = positions
        else:
            self.positions = mx.array(positions.astype(np.int32))

    def __call__(self, x, heads: int, sel=None):
        """x [m, heads * hd] -> [m, heads, hd] rotated; sel picks the tokens x holds."""
        m = x.shape[0]
        if self.tables is None:
            pos = self.positions if sel is None else self.positions[mx.array(sel)]
            return self.rope(x.reshape(m, heads, 1, -1), offset=pos).reshape(m, heads, -1)
        cos, sin = self.tables if sel is None else (t[mx.array(sel)] for t in self.tables)
        return _rotate_fused[self.rope.traditional](x.reshape(m, heads, -1), cos, sin)


def _restore_masks(cells, lay, N: int, L: int) -> tuple[dict, dict]:
    """({(kind, layer): [M] bool} where the clean values are restored, the same where a severed kind
    is held at the corrupted run's values) over the packed token rows."""
    restores, freezes = {}, {}
    for c_i, cell in enumerate(cells):
        hit = (lay.tok_row // N == c_i) & np.isin(lay.tok_pos, cell.positions)
        for layer in range(*cell.layers):
            restores[(cell.kind, layer)] = restores.get((cell.kind, layer), False) | hit
        for layer in cell.frozen(L):
            freezes[(cell.sever, layer)] = freezes.get((cell.sever, layer), False) | hit
    return restores, freezes


def attention(q, keys, values, scale: float, mask=None):
    """Softmax attention of q [R, H, n, hd] over keys/values [R, kv_heads, T, hd] (query head h
    reads kv head h // (H / kv_heads)); mask: additive [n, T]. Small-T attention on CPU: one
    batched matmul per kv head group and a fused exp, 2-3x faster than MLX's CPU
    scaled_dot_product_attention here (its many tiny matmuls and ~12 ns exp)."""
    R, H, n, hd = q.shape
    kv_heads = keys.shape[1]
    group = H // kv_heads
    scores = (q.reshape(R, kv_heads, group * n, hd) @ keys.swapaxes(-1, -2)) * scale
    if mask is not None:
        scores = scores + mx.tile(mask, (group, 1))
    # masked scores are -inf: exp_below clamps them to 2^-126, nothing next to the row's max of 1
    weights = exp_below(scores, mx.max(scores, axis=-1, keepdims=True))
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return (weights @ values).reshape(R, H, n, hd)


class PackedForward:
    """Patched forwards for one model, packed as described above."""

    def __init__(self, model, anatomy):
        self.model = model
        self.n_layers = anatomy.n_layers
        self.blocks = [unwrap(anatomy.block(i).get()) for i in range(self.n_layers)]
        self.attns = [unwrap(b.self_attn) for b in self.blocks]
        self.head_dims = [a.q_proj.weight.shape[0] // a.n_heads for a in self.attns]
        self.mlps = [b.mlp["inner"] if "inner" in b.mlp else b.mlp for b in self.blocks]  # FastSwiGLU stays
        self.embed = unwrap(anatomy.embed.get())
        self.norm = unwrap(anatomy.final_norm.get())
        # On CPU, one eval per layer. Handed a whole forward's graph at once (hundreds of ops),
        # MLX's CPU stream thread sat idle a quarter of the time (its CPU time against wall
        # time: 76% busy with one worker); layer by layer it is 95-98% busy, and the Eiffel
        # trace takes 70 s instead of 93 with one worker, ~36 s instead of ~40 with two.
        self.eval_each_layer = mx.default_device() == mx.cpu

    def prepare(self, run) -> None:
        """The corrupted run's keys/values as [N*T, kv_heads*hd] rows, once per trace."""
        run.kv_rows = [
            tuple(x.transpose(0, 2, 1, 3).reshape(x.shape[0] * x.shape[2], -1) for x in kv) for kv in run.kv
        ]

    def logits(self, run, cells, start: int, last: int = 1) -> mx.array:
        """Last-position logits [len(cells) * N, V] for the cells (sharing `start`) x samples, or
        with last > 1 the last positions' [len(cells) * N, last, V]. `run` is a schedule.Corrupted,
        prepared."""
        N, T, L = run.n_samples, len(run.ids), self.n_layers
        lay = _Layout.of(cells, N, T)
        R, M, Tq = lay.R, lay.M, T - lay.t0
        k = last
        # each row's last k tokens, row by row (every row computes at least k positions: its first
        # restored position lies in the prompt, before the k - 1 appended target tokens)
        last = lay.last if k == 1 else (lay.last[:, None] + np.arange(1 - k, 1)[None, :]).reshape(-1)

        restores, freezes = _restore_masks(cells, lay, N, L)

        def restore(kind, layer, h, sel=None):
            """h with the clean values where (kind, layer) restores, and the corrupted run's where it
            is frozen (severed paths); sel: the tokens h holds."""
            mask = restores.get((kind, layer))
            if mask is not None:
                positions = lay.tok_pos if sel is None else lay.tok_pos[sel]
                mask = mask if sel is None else mask[sel]
                h = mx.where(mx.array(mask[:, None]), run.clean[kind][layer][mx.array(positions)], h)
            frozen = freezes.get((kind, layer))
            if frozen is not None:
                source = lay.source if sel is None else lay.source[mx.array(sel)]
                frozen = frozen if sel is None else frozen[sel]
                values = run.states[kind][layer].reshape(-1, h.shape[-1])[source]
                h = mx.where(mx.array(frozen[:, None]), values, h)
            return h

        h = self._first_input(run, lay, start)
        if start > 0:
            h = restore("hidden", start - 1, h)
        ropes = {}  # layers with equal rotary settings share tables
        causal = mx.array(np.where(np.arange(T)[None, :] <= np.arange(lay.t0, T)[:, None], 0.0, -np.inf),
                          dtype=mx.float32)  # [Tq, T]: query at position t0 + i sees keys <= t0 + i

        for layer in range(start, L):
            block, attn = self.blocks[layer], self.attns[layer]
            key = _rope_key(attn.rope)
            rope = ropes.get(key) or ropes.setdefault(key, _Rope(attn.rope, self.head_dims[layer], lay.tok_pos))
            a = block.input_layernorm(h)
            keys, values = self._kv(attn, rope, a, run.kv_rows[layer], lay, T)
            if layer == L - 1:  # only each row's last position (last k positions) goes on
                q = rope(attn.q_proj(a[mx.array(last)]), attn.n_heads, last)
                if k == 1:
                    out = attention(q[:, :, None, :], keys, values, attn.scale).reshape(R, -1)
                else:  # queries [R, heads, k, hd] at positions T-k..T-1, causal among themselves
                    q = q.reshape(R, k, attn.n_heads, -1).transpose(0, 2, 1, 3)
                    out = attention(q, keys, values, attn.scale, causal[Tq - k:])
                    out = out.transpose(0, 2, 1, 3).reshape(R * k, -1)
                out = attn.o_proj(out)
                h = h[mx.array(last)] + restore("attn", layer, out, last)
                h = h + restore("mlp", layer, self.mlps[layer](block.post_attention_layernorm(h)), last)
                h = restore("hidden", layer, h, last)
                break
            to_queries, _, from_outputs = lay.head_gathers(attn.n_heads, attn.n_kv_heads)
            q = rope(attn.q_proj(a), attn.n_heads)  # [M, heads, hd]
            q = q.reshape(M * attn.n_heads, -1)[to_queries].reshape(R, attn.n_heads, Tq, -1)
            out = attention(q, keys, values, attn.scale, causal)
            out = out.reshape(R * attn.n_heads * Tq, -1)[from_outputs].reshape(M, -1)
            h = h + restore("attn", layer, attn.o_proj(out))
            h = h + restore("mlp", layer, self.mlps[layer](block.post_attention_layernorm(h)))
            h = restore("hidden", layer, h)
            if self.eval_each_layer:
                mx.eval(h)
                check_cancel(run.cancel)
        else:  # no layer computed (start == L): the replayed state's last positions
            h = h[mx.array(last)]
        out = self._head(self.norm(h))
        return out if k == 1 else out.reshape(R, k, -1)

    def _first_input(self, run, lay, start: int) -> mx.array:
        """The rows' input to layer `start`: the (noised) embeddings, or the corrupted run's hidden
        states after layer start - 1 (replayed: below a cell's first restored layer nothing differs)."""
        D = run.clean["hidden"][0].shape[-1]
        if start > 0:
            return run.states["hidden"][start - 1].reshape(-1, D)[lay.source]
        if run.embeds is not None:
            return run.embeds.reshape(-1, D)[lay.source]
        return self.embed(mx.array(np.asarray(run.ids)[lay.tok_pos]))

    def _head(self, x):
        return self.model.lm_head(x) if "lm_head" in self.model else self.embed.as_linear(x)

    @staticmethod
    def _kv(attn, rope, a, cached, lay: _Layout, T: int):
        """Keys and values [R, kv_heads, T, hd]: computed where a row is computed, the
        corrupted run's (cached, as [N*T, kv_heads*hd] rows) elsewhere; one gather each."""
        _, to_kv, _ = lay.head_gathers(attn.n_heads, attn.n_kv_heads)
        keys = rope(attn.k_proj(a), attn.n_kv_heads).reshape(lay.M, -1)
        out = []
        for new, old in ((keys, cached[0]), (attn.v_proj(a), cached[1])):
            rows = mx.concatenate([old, new]).reshape(-1, old.shape[1] // attn.n_kv_heads)
            out.append(rows[to_kv].reshape(lay.R, attn.n_kv_heads, T, -1))
        return out
