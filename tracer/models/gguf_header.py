"""A pure-Python check of a GGUF file's header, run before MLX's native loader.

MLX parses GGUF headers with gguflib, which trusts every count, length and
offset in the file: a crafted header (a string length of 2**62, a tensor with
99 dimensions, an alignment of 0, a tensor whose data lies past the end of the
file) crashes the process with SIGSEGV/SIGABRT/SIGFPE and no message.
`validate_gguf(path)` parses the whole header first (versions 2 and 3: every
metadata key/value, nested arrays included, and every tensor info), checks each
count and length against the bytes left in the file before using it, and raises
ModelError with one line naming the first problem. It reads the file through
mmap and touches only the header, so the 100 MB embedded model takes a few
milliseconds.

Metadata values of type float64 are refused only when MLX's own reader is to
read the file (`for_mlx`, the `--keep-quantized` path): it stores them as
float32 and then misreads the rest of the header (a SIGSEGV). Arrays of arrays
are parsed.

Tensor types: every type that llama.cpp's `gguf` package can dequantize to
float32 (F32, F16, BF16, Q4_0..Q8_0, the K-quants Q2_K..Q6_K, the IQ and TQ
types, MXFP4, ...) is accepted, with its block size from `gguf.constants`; the
other ggml types (Q8_1, Q8_K, I8..I64, F64: never model weights) are refused by
name; a type id outside ggml's list is corruption.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from ..errors import ModelError

MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 8  # arrays of arrays deeper than this are refused
DEFAULT_ALIGNMENT = 32

# ggml type id -> name, and id -> (weights per block, bytes per block), for every type ggml defines
GGML_TYPE_NAMES = {int(t): t.name for t in GGMLQuantizationType}
TYPE_SIZES = {int(t): sizes for t, sizes in GGML_QUANT_SIZES.items()}


@lru_cache(maxsize=1)
def readable_types() -> frozenset[int]:
    """The ggml types `gguf.quants.dequantize` turns into float32 (asked of the library itself)."""
    readable = set()
    for qtype, (_, block_bytes) in GGML_QUANT_SIZES.items():
        try:
            dequantize(np.zeros((1, block_bytes), np.uint8), qtype)
        except NotImplementedError:
            continue
        readable.add(int(qtype))
    return frozenset(readable)


# GGUF metadata value types: id -> fixed size in bytes (STRING=8 and ARRAY=9 are variable)
_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32, _FLOAT64 = 8, 9, 4, 12
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the innermost (row length)
    ggml_type: int
    offset: int  # absolute position of the tensor's data in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES[self.ggml_type]


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    n_metadata: int
    alignment: int
    data_start: int  # absolute position of the (aligned) tensor data section
    tensors: tuple[TensorInfo, ...]


class _Corrupt(Exception):
    """A problem found by the parser; validate_gguf turns it into a ModelError."""


class _Unsupported(Exception):
    """Well-formed content that tracer-tui cannot load (a tensor type, float64 metadata)."""


class _Reader:
    """Bounded little-endian reads from a buffer of `size` bytes."""

    def __init__(self, buf, size: int, for_mlx: bool = False):
        self.buf, self.size, self.off, self.for_mlx = buf, size, 0, for_mlx

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.off:
            raise _Corrupt(
                f"{what} at byte {self.off} needs {n} bytes, past the end of the file ({self.size} bytes)"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.off)
        self.off += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.off)
        self.off += 8
        return v

    def string(self, what: str) -> bytes:
        n = self.u64(f"{what} length")
        if n > self.size - self.off:
            raise _Corrupt(f"{what} length {n} at byte {self.off - 8} runs past the end of the file ({self.size} bytes)")
        s = bytes(self.buf[self.off : self.off + n])
        self.off += n
        return s

    def text(self, what: str) -> str:
        raw = self.string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"{what} {raw[:40]!r} is not UTF-8") from None

    def fits(self, count: int, each: int, what: str) -> None:
        """Refuse `count` items of at least `each` bytes that the rest of the file cannot hold."""
        if count * each > self.size - self.off:
            raise _Corrupt(f"{what} exceeds what a {self.size}-byte file can hold")

    def skip_value(self, vtype: int, key: str, depth: int = 0) -> None:
        """Step over one metadata value of type `vtype`, checking every length on the way."""
        if self.for_mlx and (vtype == _FLOAT64 or (vtype == _ARRAY and self._peek_u32() == _FLOAT64)):
            # MLX stores float64 values as float32 and advances by 4 bytes, not 8:
            # the rest of the header is then misread (it crashes on such files)
            raise _Unsupported(
                f"metadata {key!r} holds float64 values, which MLX's GGUF reader (--keep-quantized) cannot read"
            )
        if vtype in _FIXED_SIZES:
            self.need(_FIXED_SIZES[vtype], f"value of {key!r}")
            self.off += _FIXED_SIZES[vtype]
        elif vtype == _STRING:
            self.string(f"string value of {key!r}")
        elif vtype == _ARRAY:
            if depth >= MAX_NESTING:
                raise _Corrupt(f"metadata {key!r} nests arrays more than {MAX_NESTING} deep")
            etype = self.u32(f"array type of {key!r}")
            count = self.u64(f"array length of {key!r}")
            if count >= 2**31:  # MLX holds array lengths in an int
                raise _Corrupt(f"array length {count} of {key!r} is too large")
            if etype in _FIXED_SIZES:
                self.fits(count, _FIXED_SIZES[etype], f"array length {count} of {key!r}")
                self.off += count * _FIXED_SIZES[etype]
            elif etype == _STRING:
                self.fits(count, 8, f"array length {count} of {key!r}")
                self._skip_strings(count, key)
            elif etype == _ARRAY:
                self.fits(count, 12, f"array length {count} of {key!r}")
                for _ in range(count):
                    self.skip_value(_ARRAY, key, depth + 1)
            else:
                raise _Corrupt(f"metadata {key!r} is an array of unknown value type {etype}")
        else:
            raise _Corrupt(f"metadata {key!r} has unknown value type {vtype}")

    def _peek_u32(self) -> int:
        self.need(4, "array type")
        return _U32.unpack_from(self.buf, self.off)[0]

    def _skip_strings(self, count: int, key: str) -> None:
        buf, size, off, unpack = self.buf, self.size, self.off, _U64.unpack_from
        for i in range(count):
            if off + 8 > size:
                raise _Corrupt(f"string {i} of {key!r} at byte {off} runs past the end of the file ({size} bytes)")
            off += 8 + unpack(buf, off)[0]
            if off > size:
                raise _Corrupt(f"string {i} of {key!r} runs past the end of the file ({size} bytes)")
        self.off = off


def parse_header(buf, size: int, for_mlx: bool = False) -> GGUFHeader:
    """Parse and check the GGUF header in `buf` (`size` bytes); raises _Corrupt,
    or _Unsupported for well-formed content tracer-tui cannot load, on the first problem.
    `for_mlx`: also refuse what MLX's native reader misreads (float64 metadata)."""
    r = _Reader(buf, size, for_mlx)
    r.need(24, "GGUF header")
    if bytes(buf[:4]) != b"GGUF":
        raise _Corrupt(f"bad magic {bytes(buf[:4])!r}")
    r.off = 4
    version = r.u32("version")
    if version not in (2, 3):
        big_endian = version in (0x02000000, 0x03000000)
        raise _Corrupt("big-endian GGUF is not supported" if big_endian else f"unsupported GGUF version {version} (2 and 3 are read)")
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata count")
    r.fits(n_tensors, 32, f"tensor count {n_tensors}")  # name length, ndim, one dim, type, offset
    r.fits(n_kv, 13, f"metadata count {n_kv}")  # key length, type, a one-byte value
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = r.text("metadata key")
        vtype = r.u32(f"value type of {key!r}")
        if key == "general.alignment":
            if vtype != _UINT32:
                raise _Corrupt(f"general.alignment has value type {vtype}, not uint32")
            alignment = r.u32("general.alignment")
            if alignment == 0 or alignment & (alignment - 1):
                raise _Corrupt(f"general.alignment {alignment} is not a power of two")
        else:
            r.skip_value(vtype, key)
    r.fits(n_tensors, 32, f"tensor count {n_tensors}")
    infos, names = [], set()
    for _ in range(n_tensors):
        name = r.text("tensor name")
        if name in names:
            raise _Corrupt(f"tensor {name!r} appears twice")
        names.add(name)
        ndim = r.u32(f"dimension count of tensor {name!r}")
        if not 1 <= ndim <= MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} has {ndim} dimensions (1 to {MAX_DIMS} allowed)")
        dims = tuple(r.u64(f"dimensions of tensor {name!r}") for _ in range(ndim))
        if any(d == 0 or d >= 2**31 for d in dims):
            raise _Corrupt(f"tensor {name!r} has a dimension out of range: {list(dims)}")
        gtype = r.u32(f"type of tensor {name!r}")
        offset = r.u64(f"data offset of tensor {name!r}")
        infos.append((name, dims, gtype, offset))
    data_start = -(-r.off // alignment) * alignment
    tensors = []
    for name, dims, gtype, offset in infos:
        if gtype not in GGML_TYPE_NAMES:
            raise _Corrupt(f"tensor {name!r} has unknown ggml type {gtype}")
        if gtype not in readable_types():
            raise _Unsupported(
                f"tensor {name!r} has type {GGML_TYPE_NAMES[gtype]}, which is not a weight type "
                "llama.cpp's gguf package can dequantize"
            )
        per_block, block_bytes = TYPE_SIZES[gtype]
        if dims[0] % per_block:
            raise _Corrupt(f"tensor {name!r} ({GGML_TYPE_NAMES[gtype]}) has a row length {dims[0]} that is not a multiple of {per_block}")
        if offset % alignment:
            raise _Corrupt(f"tensor {name!r} data offset {offset} is not a multiple of the alignment {alignment}")
        n = 1
        for d in dims:
            n *= d
        nbytes = n // per_block * block_bytes
        start = data_start + offset
        if start + nbytes > size:
            raise _Corrupt(
                f"tensor {name!r} data (bytes {start} to {start + nbytes}) extends past the end of the file ({size} bytes)"
            )
        tensors.append(TensorInfo(name, dims, gtype, start, nbytes))
    return GGUFHeader(version, n_kv, alignment, data_start, tuple(tensors))


def validate_gguf(path: str, *, for_mlx: bool = False) -> GGUFHeader:
    """Check the GGUF file at `path` and return its parsed header; a corrupt or
    unsupported header raises ModelError("cannot read GGUF <path>: ...").
    `for_mlx`: the file is for MLX's native reader, which misreads float64 metadata."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                head = f.read()
                return _parse(path, head, len(head), for_mlx)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size, for_mlx)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None


def _parse(path: str, buf, size: int, for_mlx: bool) -> GGUFHeader:
    try:
        return parse_header(buf, size, for_mlx)
    except _Corrupt as exc:
        raise ModelError(f"cannot read GGUF {path}: corrupt header: {exc}") from None
    except _Unsupported as exc:
        raise ModelError(f"cannot read GGUF {path}: {exc}") from None
