"""Fuzz `read_gguf` with seeded mutations of a small valid GGUF (byte flips,
large values written over header fields, truncations).

Run it as a script, in a process of its own, since a mutation the header check
missed would crash MLX's native loader rather than raise:

    python tests/gguf_fuzz.py DIR CASES SEED

Each case must either load or raise ModelError; any other exception exits 1.
The last line is "fuzz: CASES cases, L loaded, R rejected".
"""

from __future__ import annotations

import os
import random
import struct
import sys

import tracer  # noqa: F401,E402  - loads the fast BLAS before mlx.core
from tracer.errors import ModelError
from tracer.models.gguf import read_checked, read_gguf, tensor_f32
from tracer.models.gguf_header import validate_gguf

import gguf_bytes


def mutate(rng: random.Random, data: bytes, header_end: int) -> tuple[bytes, str]:
    """One mutation of `data`, mostly inside the header (bytes before `header_end`)."""
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "field", "truncate", "anywhere"])
    if kind == "flip":
        spots = [rng.randrange(header_end) for _ in range(rng.randint(1, 4))]
        for i in spots:
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), f"flip bits at {spots}"
    if kind == "field":
        i = rng.randrange(4, header_end - 8)
        value = rng.choice([0, 1, 2**rng.randrange(8, 64), rng.getrandbits(64)])
        b[i : i + 8] = struct.pack("<Q", value)
        return bytes(b), f"write {value} at {i}"
    if kind == "truncate":
        n = rng.randrange(len(data))
        return bytes(b[:n]), f"truncate to {n}"
    spots = [rng.randrange(len(b)) for _ in range(rng.randint(1, 8))]
    for i in spots:
        b[i] = rng.randrange(256)
    return bytes(b), f"set bytes at {spots}"


def main(directory: str, cases: int, seed: int) -> int:
    original = gguf_bytes.small_model_file()
    path = os.path.join(directory, "fuzz.gguf")
    with open(path, "wb") as f:
        f.write(original)
    header_end = validate_gguf(path).data_start
    rng = random.Random(seed)
    loaded = rejected = 0
    for case in range(cases):
        data, what = mutate(rng, original, header_end)
        with open(path, "wb") as f:
            f.write(data)
        print(f"case {case}: {what}", flush=True)  # the last line names the culprit of a crash
        try:
            read_checked.cache_clear()  # each mutation is read afresh (same size, maybe the same mtime tick)
            for tensor in read_gguf(path).tensors:  # every tensor dequantized too
                tensor_f32(tensor)
            loaded += 1
        except ModelError as exc:
            rejected += 1
            if "\n" in str(exc):
                print(f"case {case}: message of several lines: {exc!r}")
                return 1
        except Exception as exc:  # noqa: BLE001 - exactly what the fuzz is looking for
            print(f"case {case}: {type(exc).__name__} instead of ModelError: {exc}")
            return 1
    print(f"fuzz: {cases} cases, {loaded} loaded, {rejected} rejected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
