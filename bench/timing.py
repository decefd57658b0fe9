"""What the step benchmarks share: the measurement (median time and allocator peak of repeated
calls, waiting for the device) and the least work an exact SA-VAE step needs."""

import os
import time

# Before TensorFlow loads: quiet logs, and the BFC allocator, whose statistics the peak-memory
# figure reads (some CPU builds default to an allocator that cannot reset them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import numpy as np
import tensorflow as tf

from savae_tf import devices
from savae_tf import methods
from savae_tf import factories


def describe_machine():
  """One line naming the CPU, cores, TensorFlow, the allocator and the memory figure's source."""
  try:
    with open("/proc/cpuinfo") as info:
      cpuinfo = info.read()
  except OSError:
    cpuinfo = ""
  names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
           if line.startswith("model name")]
  cpu = names[0] if names else "unknown CPU"
  vector = "AVX-512" if "avx512f" in cpuinfo else "AVX2" if "avx2" in cpuinfo else "no AVX2"
  gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
          for gpu in tf.config.list_physical_devices("GPU")]
  return (f"machine: {cpu} ({vector}), {os.cpu_count()} cores, "
          f"GPU: {', '.join(gpus) or 'none'}, TF {tf.__version__}, "
          f"TF_CPU_ALLOCATOR_USE_BFC={os.environ.get('TF_CPU_ALLOCATOR_USE_BFC')}, peak memory "
          f"from the {devices.memory_source()} of {devices.memory_device()}")


def measure(fn, repeats):
  """(median seconds per call, peak MiB allocated during the calls) after one warm-up call.

  Each call is timed until the device has finished it (`devices.synchronize`: on a GPU a call
  returns when its kernels are queued). Peak is the allocator's peak on the device that computes
  (the GPU's, or TensorFlow's CPU allocator) minus what was allocated before the calls, or, where
  the allocator cannot report it, the process's peak resident memory minus its memory before
  (`devices.PeakMemory`).
  """
  devices.synchronize(fn())  # trace and warm up
  times = []

  def timed_calls():
    for _ in range(repeats):
      start = time.perf_counter()
      devices.synchronize(fn())
      times.append(time.perf_counter() - start)

  with devices.PeakMemory() as memory:
    peak = memory.measure(timed_calls)
  return float(np.median(times)), peak / 2**20


def exact_savae_floor(steps, decoder_flops, encoder_flops):
  """Least multiply FLOPs of an exact SA-VAE step over a VAE step's, counting only the matmuls
  and convolutions of decoder and encoder forwards D and E.

  A gradient costs two such products (data and weight) per forward product, so a VAE step is
  3 (D + E). An SA-VAE step needs, per refinement step, the lambda-gradient (forward + data
  gradient: 2 D) and in the reverse sweep the gradient with respect to (lambda, theta) of
  g = <u, d f / d lambda>, which is at least twice g's own 2 D, 4 D even if g's forward work were
  free; then the final loss's gradient 3 D and the encoder's 3 E. Total (6 K + 3) D + 3 E.
  """
  d, e = decoder_flops, encoder_flops
  return ((6 * steps + 3) * d + 3 * e) / (3 * (d + e))


VARIANTS = tuple(methods.METHODS)


def latent_size(mode, latent_dim):
  """The decoder's latent size for a method: 0 for one without a latent (the LM)."""
  return latent_dim if methods.METHODS[mode].uses_latent else 0


def step_configs(steps, gradients, variants):
  """(method, K, gradient spec) of every training step a step benchmark times: the VAE step (the
  ratios' unit) always; of the other `variants`, a method that does not refine once (K = 0), one
  that refines at each K in `steps`, and one that differentiates its refinement once per K and
  gradient spec."""
  configs = []
  for name, method in methods.METHODS.items():
    if name not in variants and name != "vae":
      continue
    if not method.refines:
      configs.append((name, 0, "none"))
    else:
      specs = gradients if method.differentiates_refinement else ["none"]
      configs += [(name, k, spec) for k in steps for spec in specs]
  return configs


class _FixedBatches:
  """The corpus a benchmark gives methods that draw extra batches: every draw is its batch."""

  def __init__(self, batch):
    self.batch = batch

  def draw(self, key):
    del key
    return self.batch

  def dataset(self):
    return tf.data.Dataset.from_tensors(self.batch)


def timed_step(model, batch, corpus=None):
  """A callable running one training step of the compiled `model` as the training loop does.

  For a method whose updates span batches (`needs_training_loop`), its callbacks' work before the
  step too (the aggressive method's encoder loop, in its phase), with every batch drawn from
  `corpus` as training draws them (`corpus.draw`, keyed by the optimizer's step): each call is
  the next step of a run, on batches of their own, so the loop's length varies as in training
  and the median is the typical step. Without `corpus` every draw is `batch`, on which the
  encoder's loss keeps falling, so the loop runs to its cap: the phase's worst case."""
  if not model.method.needs_training_loop:
    step = tf.function(model.train_step)
    return lambda: step(batch)
  corpus = corpus or _FixedBatches(batch)
  # One trace for every batch shape the corpus has (training's step is traced per shape, once).
  spec = {name: tf.TensorSpec([None] * len(value.shape), value.dtype)
          for name, value in corpus.dataset().element_spec.items() if name != "rows"}
  step = tf.function(model.train_step, input_signature=[spec])
  model.optimizer.build(model.trainable_variables)
  model.method.training_state(model)
  callbacks = model.method.callbacks(model, corpus)

  def run():
    for callback in callbacks:
      callback.on_train_batch_begin(0)
    # The step's own batch: a key the aggressive inner loop (keys stride * step + 1..) never draws.
    stride = getattr(model.method, "max_inner_steps", 1)
    return step(corpus.draw(stride * int(model.optimizer.iterations.numpy())))

  return run


def refiner_gradient(spec: str):
  """A benchmark's gradient flag value, MODE or MODE:N, as SVIConfig keywords (N: keep_steps);
  "auto" is built as "unrolled" and resolved by `resolve_auto`."""
  gradient, _, keep_steps = spec.partition(":")
  return dict(gradient="unrolled" if gradient == "auto" else gradient,
              keep_steps=int(keep_steps or 0))


def resolve_auto(model, batch, spec: str):
  """For gradient spec "auto": chooses the model's gradient mode on `batch` as the binaries do
  (their default --memory_fraction, 0.5) and prints the choice."""
  if spec == "auto":
    print(factories.choose_refine_gradient(model, batch, 0.5).describe(), flush=True)
