"""Every device-dependent choice of savae-tf, made here, explicitly.

- Kernels: `gpu_present` is what the LSTMs ask before they let Keras pick cuDNN; inside
  `portable()` it answers False, so a graph traced there (every SavedModel) holds no GPU-only op,
  whatever device traced it.
- Compilation: XLA is never Keras' "auto" (`SemiAmortizedVAE` resolves `compile`'s
  `jit_compile="auto"` to False); `use_xla` decides, per setting, whether the LSTM sweeps of the exact refinement are
  compiled ("auto": on a GPU, where their many small kernels are launch-bound).
- Precision: `set_tf32` (the binaries turn TF32 off unless --tf32): on Ampere and later GPUs
  TensorFlow multiplies float32 matrices with 10-bit mantissas by default, which spoils the central
  differences of `finite_difference` and costs exact Hessian-vector products digits.
- Memory: `PeakMemory` measures what a computation allocates (the GPU's allocator on a GPU, the
  CPU's allocator or, where that cannot report, the process's resident memory), and
  `memory_budget` is a fraction of what the device has free; `choose_refine_gradient` picks the
  fastest exact gradient mode that fits.

Tests simulate a GPU by making `tf.config.list_physical_devices` / `list_logical_devices` report
one (tests/conftest.py: `simulated_gpu`), which is what this module and Keras both ask.
"""

import contextlib
import contextvars
import math
import os
import threading
from typing import Callable, NamedTuple

import tensorflow as tf

from savae_tf import cluster

_PORTABLE = contextvars.ContextVar("savae_tf_portable", default=False)

XLA_SETTINGS = ("auto", "on", "off")


def gpu_present() -> bool:
  """Whether TensorFlow sees a GPU here; False inside `portable()`."""
  if _PORTABLE.get():
    return False
  return bool(tf.config.list_physical_devices("GPU"))


def tracing_portably() -> bool:
  """Whether we are inside `portable()`."""
  return _PORTABLE.get()


@contextlib.contextmanager
def portable():
  """Traces graphs that run on any device: inside it, every choice of this module is the CPU's
  (no cuDNN kernel, no XLA cluster), whether or not a GPU is present."""
  token = _PORTABLE.set(True)
  try:
    yield
  finally:
    _PORTABLE.reset(token)


def check_xla_setting(setting: str) -> str:
  """`setting` if it is one of XLA_SETTINGS, else a ValueError naming it."""
  if setting not in XLA_SETTINGS:
    raise ValueError(f"Unknown XLA setting {setting!r}; expected one of {XLA_SETTINGS}.")
  return setting


def use_xla(setting: str) -> bool:
  """Whether the LSTM sweeps compile with XLA for `setting` "on", "off" or "auto" (on a GPU
  only: on a CPU it was 6-12% faster for a small model but up to 16% slower at the paper's size,
  and every new sentence length compiles again; BENCHMARKS.md). Never inside `portable()`."""
  check_xla_setting(setting)
  if tracing_portably():
    return False
  return setting == "on" or (setting == "auto" and gpu_present())


def set_tf32(allowed: bool):
  """Allows or forbids TF32 float32 matrix products (a no-op on devices without TF32)."""
  tf.config.experimental.enable_tensor_float_32_execution(allowed)


def tf32_enabled() -> bool:
  return tf.config.experimental.tensor_float_32_execution_enabled()


def memory_device() -> str:
  """The device whose memory the model's activations take: "GPU:0" or "CPU:0"."""
  return "GPU:0" if gpu_present() else "CPU:0"


def free_memory_bytes() -> int:
  """What the model may still allocate on `memory_device()`: the GPU's memory limit minus what
  TensorFlow holds there, or the host's available memory (MemAvailable)."""
  if gpu_present():
    from tensorflow.python.client import device_lib  # pylint: disable=g-import-not-at-top
    limit = next(d.memory_limit for d in device_lib.list_local_devices()
                 if d.device_type == "GPU")
    return max(0, int(limit) - tf.config.experimental.get_memory_info("GPU:0")["current"])
  with open("/proc/meminfo") as meminfo:
    for line in meminfo:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  raise OSError("/proc/meminfo has no MemAvailable")


def memory_budget(fraction: float) -> int:
  """`fraction` of `free_memory_bytes()`."""
  if not 0 < fraction <= 1:
    raise ValueError(f"The memory fraction must be in (0, 1]; got {fraction}.")
  return int(fraction * free_memory_bytes())


def _resident_bytes() -> int:
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_source() -> str:
  """Where `PeakMemory` reads: "allocator" (TensorFlow's allocator on `memory_device()`, which
  tracks its peak on a GPU, and on CPU with TF_CPU_ALLOCATOR_USE_BFC=true set before TensorFlow
  starts) or "rss" (the process's resident memory, sampled every millisecond)."""
  device = memory_device()
  try:
    tf.config.experimental.reset_memory_stats(device)
    with tf.device(device):
      probe = tf.ones([1024])
    tracked = tf.config.experimental.get_memory_info(device)["current"] > 0
    del probe
    return "allocator" if tracked else "rss"
  except (ValueError, RuntimeError, tf.errors.OpError):  # "Cannot reset memory stats"
    return "rss"


def synchronize(result=None):
  """Waits until the work queued so far has finished (GPU kernels run asynchronously: without
  it a timer measures launches): reads `result`'s tensors (any distributed values too) back to
  the host, and on a GPU outside a multi-worker cluster (where TensorFlow cannot) waits for
  every device. On a CPU eager work is done when it returns."""
  strategy = tf.distribute.get_strategy()
  for value in tf.nest.flatten(result, expand_composites=True):  # IndexedSlices' parts too
    for local in strategy.experimental_local_results(value):
      if isinstance(local, tf.Tensor) and hasattr(local, "numpy"):
        local.numpy()
  if gpu_present() and not cluster.in_cluster():
    tf.test.experimental.sync_devices()


class PeakMemory:
  """Peak memory of computations, in bytes beyond what was allocated when the block was entered.

  `measure(fn)` runs `fn()` to completion and returns its peak. With the allocator each call's
  own peak is read; with resident memory (which a process keeps once touched) it is the highest
  mark since the block began, which is the same for calls measured in increasing order of size.
  """

  def __enter__(self):
    self.source = memory_source()
    self.device = memory_device()
    if self.source == "allocator":
      self.before = tf.config.experimental.get_memory_info(self.device)["current"]
    else:
      self.before = self.peak = _resident_bytes()
      self.done = threading.Event()
      self.thread = threading.Thread(target=self._sample, daemon=True)
      self.thread.start()
    return self

  def _sample(self):
    while not self.done.wait(0.001):
      self.peak = max(self.peak, _resident_bytes())

  def measure(self, fn: Callable[[], object]) -> int:
    if self.source == "allocator":
      tf.config.experimental.reset_memory_stats(self.device)
    synchronize(fn())
    if self.source == "allocator":
      return tf.config.experimental.get_memory_info(self.device)["peak"] - self.before
    self.peak = max(self.peak, _resident_bytes())
    return self.peak - self.before

  def __exit__(self, *exc):
    if self.source == "rss":
      self.done.set()
      self.thread.join()


class GradientChoice(NamedTuple):
  """What `choose_refine_gradient` decided, and from which figures (bytes)."""
  gradient: str
  keep_steps: int
  base_bytes: int  # a step's memory with no refinement step kept
  step_bytes: int  # what each refinement step kept for differentiation adds
  budget_bytes: int

  def describe(self) -> str:
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    mode = self.gradient + (f" keeping {self.keep_steps} steps" if self.keep_steps else "")
    return (f"refine gradient auto: {mode} (a step needs {mib(self.base_bytes)} plus "
            f"{mib(self.step_bytes)} per kept refinement step; budget {mib(self.budget_bytes)})")


def choose_refine_gradient(steps: int, base_bytes: int, step_bytes: int,
                           budget_bytes: int) -> GradientChoice:
  """The fastest exact gradient mode whose memory fits `budget_bytes`.

  "unrolled" keeps every one of the K steps' activations: base + K * step. "reverse" keeping m
  steps holds m of them plus the one it re-evaluates: base + (m + 1) * step, flat in K for
  m = 0. Faster as more is kept (BENCHMARKS.md), so: "unrolled" if it fits, else "reverse" with
  the largest m that fits (m = 0 when none does: nothing exact needs less).
  """
  step_bytes = max(step_bytes, 0)
  choice = lambda gradient, keep: GradientChoice(  # noqa: E731
      gradient, keep, base_bytes, step_bytes, budget_bytes)
  if base_bytes + steps * step_bytes <= budget_bytes:
    return choice("unrolled", 0)
  room = budget_bytes - base_bytes
  keep = 0 if step_bytes == 0 else max(0, math.floor(room / step_bytes) - 1)
  return choice("reverse", min(keep, max(steps - 1, 0)))
