"""A sweep over the ranks of an `mx.distributed` group (mlx.launch), merged into one results file.

Run under `mlx.launch` (or any launcher that sets MLX_RANK / MPI's variables), `sweep` notices
the group and:

1. start (the only collectives, on the engine thread): every rank loads the model, checks the
   results file and takes its rank lock (`RESULTS.rank-K.lock`, held until its share is done);
   one all_gather compares what each rank got: a rank that failed fails every rank with its
   one-line message, and ranks whose settings, model (name, layers, embedding checksum) or
   facts differ are refused. Rank 0 then folds part files left by an earlier run into the
   results file; a second all_gather confirms that every rank sees the results directory
   (it must be shared: one disk, or NFS across hosts).
2. every rank reads the results file, takes the facts not in it and shards them the same way
   (`balance`: greedy longest-first on tokens x layers, ties to the lower rank), then runs the
   ordinary single-process sweep (run.run_sweep) over its share into `RESULTS.rank-K.part`.
   Each fact's noise comes from the settings' seed alone, so a fact's grids do not depend on
   which rank traces it or in which order.
3. end (files only, no collective that a dead peer could hang): rank 0 waits until every other
   rank has released its lock (finished, stopped or died), showing every rank's share as it
   grows, appends the part files' lines to the results file (skipped facts then traced ones,
   each in facts-file order, as one process writes them), removes the parts and names the
   facts no rank finished (SweepSummary.missing). Rerunning the same command resumes: only
   the missing facts are sharded again.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError, ModelError, TracerError, one_line
from ..inputs.facts import Fact
from .results import (
    FORMAT_VERSION,
    ResultsWriter,
    SweepConfig,
    config_mismatch,
    line_segments,
    parse_line,
    prepare_output,
    scan_results,
    stored_config,
)
from .run import FactDone, FactSkipped, SweepSummary, run_sweep

LAUNCH_VARIABLES = ("MLX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")  # ring/jaccl, Open MPI, MPICH
MESSAGE_BYTES = 300
WAIT_AFTER_CANCEL = 60.0  # seconds rank 0 waits for stopping peers once the run is cancelled


@dataclass
class ShardsAssigned:
    """The facts still to do, as dealt to the ranks (posted once by every rank)."""

    rank: int
    ranks: int
    shares: list[int]  # facts per rank
    pending: int  # facts not yet in the results file


@dataclass
class RanksProgress:
    """Facts done per rank (rank 0 reads the other ranks' part files); done/total = the whole."""

    done: list[int]
    shares: list[int]

    @property
    def total(self) -> int:
        return sum(self.shares)

    @property
    def all_done(self) -> int:
        return sum(self.done)


def launched() -> bool:
    """Was this process started by a distributed launcher (mlx.launch, mpirun)?"""
    return any(os.environ.get(name) for name in LAUNCH_VARIABLES)


def current_group():
    """The `mx.distributed` group of a launched process with more than one rank, else None.
    Call it on the thread that runs MLX (the engine's)."""
    if not launched():
        return None
    import mlx.core as mx

    group = mx.distributed.init()
    return group if group.size() > 1 else None


def part_path(output: str, rank: int) -> str:
    return f"{output}.rank-{rank}.part"


def lock_path(output: str, rank: int) -> str:
    return f"{output}.rank-{rank}.lock"


def probe_path(output: str) -> str:
    return f"{output}.ranks-probe"


def fact_cost(backend, fact: Fact) -> int:
    """A fact's tracing cost estimate: prompt tokens x layers (every cell of its grids)."""
    layers = getattr(backend, "n_layers", 1)
    try:
        tokens = len(backend.token_ids(fact.prompt)) if hasattr(backend, "token_ids") else len(fact.prompt.split())
    except TracerError:  # an untokenizable prompt is skipped at once: nearly free
        tokens = 1
    return max(tokens, 1) * layers


def balance(costs: list[int], ranks: int) -> list[list[int]]:
    """Deal items to `ranks` bins, greedy longest-first: the costliest item goes to the least
    loaded rank (ties: the earlier item, the lower rank). Deterministic.

    Args:
        costs: one cost per item.
        ranks: the number of bins.

    Returns:
        Per rank, the indices of its items in ascending order.
    """
    loads = [0] * ranks
    bins: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        k = min(range(ranks), key=lambda r: (loads[r], r))
        loads[k] += costs[i]
        bins[k].append(i)
    return [sorted(b) for b in bins]


class RankLock:
    """An exclusive lock on a file; held while a rank works on its share. `free` tells
    whether a rank that held it is gone (finished, stopped or died)."""

    def __init__(self, path: str):
        import fcntl

        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise InputError(f"{path} is held by another sweep of this results file") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def free(path: str) -> bool:
        """True when nobody holds the lock at `path` (or the file is gone)."""
        try:
            RankLock(path).release()
            return True
        except InputError:
            return False


# ---- the part files -------------------------------------------------------------------------


def part_lines(path: str) -> list[tuple[bytes, dict]]:
    """The complete, valid lines of a part file (a torn last line is left out)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for _, raw, complete in line_segments(data):
        obj = parse_line(raw) if complete else None
        if obj is not None:
            out.append((raw, obj))
    return out


def merge_parts(output: str, facts: list[Fact], config: SweepConfig) -> int:
    """Append every part file's facts that the results file lacks (skipped ones first, then the
    traced ones, each in facts-file order; facts not in `facts` last), then remove the parts.
    Idempotent: a merge cut short leaves duplicates that the next one ignores.

    Returns:
        The number of lines appended.
    """
    parts = sorted(glob.glob(glob.escape(output) + ".rank-*.part"))
    if not parts:
        return 0
    state = scan_results(output)
    found: dict = {}
    for path in parts:
        for raw, obj in part_lines(path):
            diff = obj.get("v") != FORMAT_VERSION or config_mismatch(stored_config(obj["config"]), config)
            if diff:
                raise InputError(f"{path} was written with {diff if diff is not True else 'another format'}; "
                                 "remove it or use the same settings")
            if obj["known_id"] not in state.records:
                found.setdefault(obj["known_id"], (raw, obj["status"]))
    order = [f.known_id for f in facts if found.get(f.known_id, (0, ""))[1] == "skipped"]
    order += [f.known_id for f in facts if found.get(f.known_id, (0, ""))[1] == "kept"]
    placed = set(order)
    order += [k for k in found if k not in placed]
    with ResultsWriter(output, state) as writer:
        writer.append_lines([found[k][0] + b"\n" for k in order])
    for path in parts:
        os.remove(path)
    return len(order)


class PartCounter:
    """Counts the facts of each rank's share written to its part file, reading only new bytes."""

    def __init__(self, output: str, shares: list[set]):
        self.paths = [part_path(output, k) for k in range(len(shares))]
        self.shares = shares
        self.offsets = [0] * len(shares)
        self.seen: list[set] = [set() for _ in shares]

    def done(self) -> list[int]:
        for k, path in enumerate(self.paths):
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[k])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            for raw in data[:end].split(b"\n"):
                obj = parse_line(raw) if raw.strip() else None
                if obj is not None and obj["known_id"] in self.shares[k]:
                    self.seen[k].add(obj["known_id"])
            self.offsets[k] += end
        return [len(s) for s in self.seen]


# ---- the start: agreement between ranks -------------------------------------------------------


def _digest(value) -> bytes:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).digest()[:8]


OK, INPUT_FAILED, MODEL_FAILED = 1, 2, 3  # a row's status


def _status(exc: BaseException | None) -> int:
    return OK if exc is None else MODEL_FAILED if isinstance(exc, ModelError) else INPUT_FAILED


def _row(status: int, digests: list[bytes], message: str) -> list[int]:
    text = message.encode("utf-8")[:MESSAGE_BYTES]
    return [status] + list(b"".join(digests)) + list(text.ljust(MESSAGE_BYTES, b"\0"))


def _gather(group, row: list[int]) -> list[tuple[int, list[bytes], str]]:
    """All ranks' rows (status, 8-byte digests, message); a collective: every rank must call it."""
    import mlx.core as mx
    import numpy as np

    rows = np.array(mx.distributed.all_gather(mx.array([row], dtype=mx.int32), group=group)).reshape(group.size(), -1)
    out = []
    for r in rows:
        raw = bytes(int(v) for v in r[1:])
        digests, text = raw[:-MESSAGE_BYTES], raw[-MESSAGE_BYTES:]
        out.append((int(r[0]), [digests[i : i + 8] for i in range(0, len(digests), 8)],
                    text.rstrip(b"\0").decode("utf-8", "replace")))
    return out


def _refuse(rows, what: list[str]) -> None:
    """Raise the first failure or disagreement among the gathered rows, the same on every rank."""
    size = len(rows)
    for k, (status, _, message) in enumerate(rows):
        if status != OK:
            raise (ModelError if status == MODEL_FAILED else InputError)(f"rank {k} of {size} failed: {message}")
    for k, (_, digests, _) in enumerate(rows):
        for name, mine, theirs in zip(what, rows[0][1], digests):
            if mine != theirs:
                raise InputError(f"rank {k} of {size} has other {name} than rank 0; start every rank with the "
                                 "same command, model files and facts file")


def _start(make_backend, facts, output, config, group, rank: int):
    """Load, check and lock on every rank; agree; rank 0 folds old parts in. Returns
    (backend, config, lock) or raises the same one-line error on every rank."""
    backend = lock = failure = None
    digests = [b"\0" * 8] * 3
    nonce = secrets.token_hex(8) if rank == 0 else ""
    try:
        backend = make_backend()
        if config.model is None:
            config = dataclasses.replace(config, model=backend.name)
        config = config.with_mode(facts)
        prepare_output(output, facts, config)
        lock = RankLock(lock_path(output, rank))
        identity = backend.fingerprint() if hasattr(backend, "fingerprint") else backend.name
        fact_rows = [dataclasses.astuple(f) for f in facts]
        digests = [_digest(dataclasses.replace(config, model=None).to_dict()), _digest(identity), _digest(fact_rows)]
        if rank == 0:
            with open(probe_path(output), "w") as f:
                f.write(nonce)
    except TracerError as exc:
        failure = exc
    except OSError as exc:
        failure = InputError(f"cannot write beside {output}: {exc.strerror or exc}")
    message = one_line(str(failure)) if failure is not None else nonce
    rows = _gather(group, _row(_status(failure), digests, message))
    try:
        _refuse(rows, ["settings", "model", "facts"])  # every rank sees the same rows: all raise alike
        failure = None
        try:
            if rank == 0:
                merge_parts(output, facts, config)
            else:
                with open(probe_path(output)) as f:
                    if f.read() != rows[0][2]:
                        raise OSError
        except TracerError as exc:
            failure = exc
        except OSError:
            failure = InputError(f"it does not see rank 0's files in {os.path.dirname(os.path.abspath(output))}: "
                                 "the results directory must be shared by every host")
        message = one_line(str(failure)) if failure is not None else ""
        _refuse(_gather(group, _row(_status(failure), [], message)), [])
    except TracerError:
        if lock is not None:
            lock.release()
            _remove(lock.path)
        if rank == 0:
            _remove(probe_path(output))
        raise
    return backend, config, lock


# ---- the sweep ------------------------------------------------------------------------------------


def sweep(
    make_backend: Callable[[], object],
    facts: list[Fact],
    output: str,
    config: SweepConfig,
    *,
    on_event: Callable[[object], None] | None = None,
    cancel: threading.Event | None = None,
) -> SweepSummary:
    """A sweep (run.run_sweep), sharded over the ranks when this process runs in a distributed
    group. Call it on the thread that owns the model (the engine's).

    Args:
        make_backend: loads (or returns) the sweep backend; called once, on this thread.
        facts: the facts of the run, in file order.
        output: the results file.
        config: the sweep's settings.
        on_event: sweep events, plus ShardsAssigned and RanksProgress in a group.
        cancel: stop after the fact in hand (every part file stays valid).

    Returns:
        The SweepSummary: on rank 0 of a group, of the whole run with `missing` naming the facts
        no rank finished; on the other ranks, of their share.

    Raises:
        InputError, ModelError: bad input, or any rank's failure to start (the same on every rank).
    """
    group = current_group()
    if group is None:
        return run_sweep(make_backend(), facts, output, config, on_event=on_event, cancel=cancel)
    return _run_share(make_backend, facts, output, config, group, on_event or (lambda event: None), cancel)


def _run_share(make_backend, facts, output, config, group, emit, cancel) -> SweepSummary:
    started = time.perf_counter()
    rank, size = group.rank(), group.size()
    backend, config, lock = _start(make_backend, facts, output, config, group, rank)
    try:
        if rank == 0:
            os.remove(probe_path(output))
        done = scan_results(output).records
        pending = [f for f in facts if f.known_id not in done]
        bins = balance([fact_cost(backend, f) for f in pending], size)
        shares = [[pending[i] for i in b] for b in bins]
        emit(ShardsAssigned(rank, size, [len(s) for s in shares], len(pending)))
        counter = PartCounter(output, [{f.known_id for f in s} for s in shares])
        last = [0.0]

        def relay(event):
            emit(event)
            if rank == 0 and isinstance(event, (FactDone, FactSkipped)) and time.monotonic() - last[0] > 1.0:
                last[0] = time.monotonic()
                emit(RanksProgress(counter.done(), [len(s) for s in shares]))

        own = run_sweep(backend, shares[rank], part_path(output, rank), config, on_event=relay, cancel=cancel)
    finally:
        lock.release()
    if rank != 0:
        return dataclasses.replace(own, rank=rank, ranks=size, seconds=time.perf_counter() - started)
    _wait_for_ranks(output, size, counter, [len(s) for s in shares], emit, cancel)
    merge_parts(output, facts, config)
    for k in range(size):
        _remove(lock_path(output, k))
    return _summary(output, facts, pending, own, size, time.perf_counter() - started)


def _wait_for_ranks(output, size, counter, shares, emit, cancel) -> None:
    """Rank 0: wait until every other rank has released its lock (done, stopped or dead)."""
    waiting = set(range(1, size))
    cancelled_at = None
    while waiting:
        waiting = {k for k in waiting if not RankLock.free(lock_path(output, k))}
        emit(RanksProgress(counter.done(), shares))
        if cancel is not None and cancel.is_set():
            cancelled_at = cancelled_at or time.monotonic()
            if time.monotonic() - cancelled_at > WAIT_AFTER_CANCEL:
                return
        if waiting:
            time.sleep(0.5)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _summary(output, facts, pending, own: SweepSummary, size: int, seconds: float) -> SweepSummary:
    records = scan_results(output).records
    in_run = {f.known_id for f in facts}
    by_reason: dict[str, int] = {}
    for k, r in records.items():
        if k in in_run and r["status"] == "skipped":
            by_reason[r["skipped"] or "?"] = by_reason.get(r["skipped"] or "?", 0) + 1
    missing = [f.known_id for f in pending if f.known_id not in records]
    return dataclasses.replace(
        own,
        path=output,
        facts=len(facts),
        kept=sum(1 for k, r in records.items() if k in in_run and r["status"] == "kept"),
        skipped=sum(by_reason.values()),
        skipped_by_reason=by_reason,
        traced_now=sum(1 for f in pending if records.get(f.known_id, {}).get("status") == "kept"),
        checked_now=sum(1 for f in pending if f.known_id in records),
        seconds=seconds,
        rank=0,
        ranks=size,
        missing=missing,
    )
