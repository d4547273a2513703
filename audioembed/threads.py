"""How many CPU threads the project's computations use: the one place that decides.

PyTorch's default (one intra-op thread per core, OpenMP threads that spin while they wait)
is the slow case on a machine that is doing anything else: every small operator ends in a
barrier that waits for a thread the OS has given to another process (a user's report: 2.2x real
time for the README Quickstart with two threads on a busy 2-core machine, 43x with one).
bench/threads_bench.py measures the settings (docs/benchmarks/threads_bench.md). Parallel
operators only pay off when each forward pass has enough work (a large model on long windows)
and the cores are actually free. So:

* an explicit count wins: ``--threads N`` on the commands that compute, else ``AUDIOEMBED_THREADS``,
  else ``OMP_NUM_THREADS``; commands that train or run a pipeline hold it for their whole run
  (:func:`command_threads`);
* otherwise a forward pass with little work (parameters x seconds of audio below
  :data:`SMALL_WORK`) gets one thread, whatever the machine;
* otherwise as many threads as there are idle cores (usable cores minus the 1-minute load
  average, at least one), at most :data:`MAX_AUTO_THREADS`.

Decoding runs in its own single background thread (``audioembed.extraction``) and is not
counted: it mostly waits on I/O. BLAS libraries used by the probes (scikit-learn, numpy) get
the same count through :func:`limit_blas_threads`. :func:`prefer_passive_waiting` makes OpenMP
threads sleep instead of spin while waiting; it must run before torch is imported, which the
command line does first thing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from .errors import AudioEmbedError

ENV_VAR = "AUDIOEMBED_THREADS"
#: parameters x seconds of audio per forward below which one thread is fastest: thread wake-ups
#: and barriers cost more than they save (e.g. the 2M-parameter bundled student on short clips)
SMALL_WORK = 1.0e8
#: the automatic choice never takes more threads than this (memory bandwidth bound beyond)
MAX_AUTO_THREADS = 8


class ThreadsError(AudioEmbedError, ValueError):
    """An invalid thread count was requested."""


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} ({self.reason})"


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def idle_cores() -> int:
    """Usable cores minus the 1-minute load average, at least 1."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average on this OS
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def requested_threads(value: int | str | None) -> int | None:
    """The explicit count: ``value`` (from ``--threads``), else ``$AUDIOEMBED_THREADS``, else
    ``$OMP_NUM_THREADS`` (the usual way to pin torch's threads); None = choose."""
    source = "--threads"
    for variable in (ENV_VAR, "OMP_NUM_THREADS"):
        if value is None and os.environ.get(variable):
            value, source = os.environ[variable], variable
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        raise ThreadsError(f"{source}: expected a whole number of threads, got {value!r}") from None
    if count < 1:
        raise ThreadsError(f"{source}: need at least 1 thread, got {count}")
    return count


def choose_threads(requested: int | str | None = None, *, parameters: int | None = None,
                   seconds: float | None = None) -> ThreadChoice:
    """Intra-op threads for forward passes of a model with ``parameters`` on ``seconds`` of audio.

    ``parameters``/``seconds`` describe one forward pass (None = unknown: treated as large).
    """
    explicit = requested_threads(requested)
    if explicit is not None:
        return ThreadChoice(explicit, "requested")
    if parameters is not None and seconds is not None and parameters * seconds < SMALL_WORK:
        return ThreadChoice(1, "small work per forward pass")
    idle = idle_cores()
    cores = usable_cores()
    threads = min(idle, MAX_AUTO_THREADS)
    reason = f"{idle} of {cores} cores idle" if idle < cores else f"{cores} idle cores"
    return ThreadChoice(threads, reason)


def choose_probe_threads(requested: int | str | None = None) -> ThreadChoice:
    """Threads for probe training: heads on pooled features are small, so one unless asked."""
    explicit = requested_threads(requested)
    if explicit is not None:
        return ThreadChoice(explicit, "requested")
    return ThreadChoice(1, "probe heads are small")


@contextlib.contextmanager
def compute_threads(choice: ThreadChoice | int):
    """Inside the block torch and the BLAS pools use ``choice`` threads; restored afterwards."""
    import torch

    count = choice.threads if isinstance(choice, ThreadChoice) else int(choice)
    previous = torch.get_num_threads()
    apply_threads(count)
    try:
        with limit_blas_threads(count):
            yield count
    finally:
        apply_threads(previous)


@contextlib.contextmanager
def command_threads(requested: int | str | None):
    """The thread policy of a whole command that trains or runs a pipeline (``distill``,
    ``pretrain``, ``reproduce``, ``dsuperb eval``, ...).

    torch and the BLAS pools get ``requested`` threads (else ``$AUDIOEMBED_THREADS``, else
    ``$OMP_NUM_THREADS``, else the idle cores: a trainer's model is not small). An explicit count
    is also exported as ``$AUDIOEMBED_THREADS`` inside the block, so every step below that chooses
    its own count (extraction, probes) honours ``--threads`` too; both are restored afterwards.
    """
    explicit = requested_threads(requested)
    previous = os.environ.get(ENV_VAR)
    if explicit is not None:
        os.environ[ENV_VAR] = str(explicit)
    try:
        with compute_threads(choose_threads(explicit)) as count:
            yield count
    finally:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous


def apply_threads(choice: ThreadChoice | int) -> int:
    """Set torch's intra-op thread count for this process; returns the count."""
    import torch

    count = choice.threads if isinstance(choice, ThreadChoice) else int(choice)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


@contextlib.contextmanager
def limit_blas_threads(count: int):
    """Cap the threads of BLAS/OpenMP pools used by numpy and scikit-learn inside the block."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        yield
        return
    with threadpool_limits(limits=count):
        yield


def prefer_passive_waiting() -> None:
    """Let OpenMP threads sleep rather than spin between operators (unless the user chose).

    Spinning threads steal the cores other processes (and our own decode thread) need; on a
    busy machine that turns milliseconds into hundreds of milliseconds. Only effective before
    the OpenMP runtime loads, i.e. before ``import torch``.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
