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
values still come from every position).

The result equals the generic forward up to float rounding; the tests check both
against the oracle. Used for mlx-lm `llama` and `qwen2` models (plain pre-norm
blocks, full attention) whenever the prefix cache is available.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np


PACKED_MODULES = {"mlx_lm.models.llama", "mlx_lm.models.qwen2"}


def _unwrap(module):
    while hasattr(module, "inner") and isinstance(module, nn.Module) and "inner" in module:
        module = module["inner"]
    return module


def supports_packed(model, anatomy) -> bool:
    if type(model).__module__ not in PACKED_MODULES:
        return False
    inner = getattr(model, "model", None)
    if inner is None or getattr(inner, "swa_idx", None) is not None:
        return False
    for i in range(anatomy.n_layers):
        block = _unwrap(anatomy.block(i).get())
        attn = _unwrap(block.self_attn)
        if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "rope", "scale")):
            return False
        if any(hasattr(attn, n) for n in ("q_norm", "k_norm")):
            return False
    return True


class PackedForward:
    """Patched forwards for one model, packed as described above."""

    def __init__(self, model, anatomy):
        self.model = model
        self.n_layers = anatomy.n_layers
        self.blocks = [_unwrap(anatomy.block(i).get()) for i in range(self.n_layers)]
        self.attns = [_unwrap(b.self_attn) for b in self.blocks]
        self.mlps = [b.mlp["inner"] if "inner" in b.mlp else b.mlp for b in self.blocks]  # FastSwiGLU stays
        self.embed = _unwrap(anatomy.embed.get())
        self.norm = _unwrap(anatomy.final_norm.get())

    def _head(self, x):
        return self.model.lm_head(x) if "lm_head" in self.model else self.embed.as_linear(x)

    def logits(self, run, cells, start: int) -> mx.array:
        """Last-position logits [len(cells) * N, V] for the cells (sharing `start`) x samples.
        `run` is a schedule.Corrupted with the corrupted run's keys/values."""
        N, T, L = run.n_samples, len(run.ids), self.n_layers
        R = len(cells) * N
        row_sample = np.tile(np.arange(N), len(cells))
        row_tmin = np.repeat([min(c.positions) for c in cells], N)
        t0 = int(row_tmin.min())
        Tq = T - t0
        lengths = T - row_tmin
        tok_row = np.repeat(np.arange(R), lengths)
        tok_pos = np.concatenate([np.arange(t, T) for t in row_tmin])
        M = len(tok_pos)
        pad_of_tok = tok_row * Tq + tok_pos - t0  # where each packed token sits in [R, Tq]
        tok_of_pad = np.zeros(R * Tq, dtype=np.int64)  # padding slots read token 0 (overwritten or unused)
        tok_of_pad[pad_of_tok] = np.arange(M)
        last = np.cumsum(lengths) - 1  # each row's last position, in the packed order
        pad_of_tok_a, tok_of_pad_a, last_a = mx.array(pad_of_tok), mx.array(tok_of_pad), mx.array(last)
        pos_a = mx.array(tok_pos.astype(np.int32))  # rope offsets, one per packed token
        source = mx.array(row_sample[tok_row] * T + tok_pos)  # row of the corrupted run's [N*T] states

        restores = {}  # (kind, layer) -> packed [M, 1] mask
        for c_i, cell in enumerate(cells):
            rows = np.arange(c_i * N, (c_i + 1) * N)
            hit = np.isin(tok_row, rows) & np.isin(tok_pos, cell.positions)
            for layer in range(*cell.layers):
                key = (cell.kind, layer)
                restores[key] = restores.get(key, np.zeros(M, dtype=bool)) | hit

        def restore(kind, layer, h, sel=None):
            """h with the clean values where (kind, layer) restores; sel: a subset of the tokens."""
            mask = restores.get((kind, layer))
            if mask is None:
                return h
            positions = tok_pos if sel is None else tok_pos[sel]
            mask = mask if sel is None else mask[sel]
            return mx.where(mx.array(mask[:, None]), run.clean[kind][layer][mx.array(positions)], h)

        D = run.clean["hidden"][0].shape[-1]
        if start == 0:
            h = self.embed(mx.array(np.asarray(run.ids)[tok_pos]))
            if run.delta is not None:
                h = h + run.delta.reshape(-1, D)[source]
        else:
            h = run.states["hidden"][start - 1].reshape(-1, D)[source]
            h = restore("hidden", start - 1, h)
        prefix = mx.array((np.arange(t0, T)[None, :] < row_tmin[:, None])[:, None, :, None])  # [R,1,Tq,1]
        rows_sample = mx.array(row_sample)

        for layer in range(start, L):
            block, attn = self.blocks[layer], self.attns[layer]
            final = layer == L - 1
            a = block.input_layernorm(h)
            keys, values = self._kv(attn, a, layer, run, rows_sample, pos_a, tok_of_pad_a, prefix, R, Tq, t0)
            if final:  # only each row's last position goes on
                q = attn.q_proj(a[last_a]).reshape(R, attn.n_heads, 1, -1)
                q = attn.rope(q, offset=T - 1)
                out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=attn.scale)
                out = attn.o_proj(out.reshape(R, -1))
                h = h[last_a] + restore("attn", layer, out, last)
                h = h + restore("mlp", layer, self.mlps[layer](block.post_attention_layernorm(h)), last)
                h = restore("hidden", layer, h, last)
                break
            q = attn.q_proj(a).reshape(M, attn.n_heads, 1, -1)
            q = attn.rope(q, offset=pos_a)
            q = q.reshape(M, -1)[tok_of_pad_a].reshape(R, Tq, attn.n_heads, -1).transpose(0, 2, 1, 3)
            out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=attn.scale, mask="causal")
            out = out.transpose(0, 2, 1, 3).reshape(R * Tq, -1)[pad_of_tok_a]
            h = h + restore("attn", layer, attn.o_proj(out))
            h = h + restore("mlp", layer, self.mlps[layer](block.post_attention_layernorm(h)))
            h = restore("hidden", layer, h)
        else:  # no layer computed (start == L): the replayed state's last positions
            h = h[last_a]
        return self._head(self.norm(h))

    @staticmethod
    def _kv(attn, a, layer, run, rows_sample, pos_a, tok_of_pad_a, prefix, R, Tq, t0):
        """Keys and values [R, kv_heads, T, hd]: computed where a row is computed, the
        corrupted run's elsewhere."""
        M = a.shape[0]
        k = attn.k_proj(a).reshape(M, attn.n_kv_heads, 1, -1)
        k = attn.rope(k, offset=pos_a).reshape(M, -1)
        v = attn.v_proj(a)
        cached_k, cached_v = run.kv[layer]  # [N, kv_heads, T, hd], after rope
        cached_k, cached_v = cached_k[rows_sample], cached_v[rows_sample]
        out = []
        for new, cached in ((k, cached_k), (v, cached_v)):
            new = new[tok_of_pad_a].reshape(R, Tq, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
            late = mx.where(prefix, cached[:, :, t0:], new)
            out.append(mx.concatenate([cached[:, :, :t0], late], axis=2) if t0 else late)
        return out
