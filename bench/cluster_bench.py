"""Benchmark: training throughput (sentences per second) of one process and of local multi-worker
clusters (bin/launch_local_cluster.py), the same model and global batch.

  python bench/cluster_bench.py                        # 1 process, then 1 and 2 workers
  python bench/cluster_bench.py --workers=1,2,3 --model=savae

On one machine the workers share its cores, so a cluster cannot be faster; the rows show what the
collectives (gradients, logged means, BatchNorm) and the per-worker input pipeline cost. Each row
is the median step time over --steps steps after --warmup steps, in a fresh process (or cluster).
"""

import os
import pathlib
import re
import subprocess
import sys
import time

# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine

from absl import app
from absl import flags

flags.DEFINE_list("workers", ["1", "2"], "Cluster sizes to measure (after one plain process).")
flags.DEFINE_enum("model", "vae", ["vae", "savae"], "Training method.")
flags.DEFINE_integer("batch_size", 32, "Global batch (sentences).")
flags.DEFINE_integer("length", 20, "Tokens per sentence.")
flags.DEFINE_integer("hidden", 128, "Word and hidden sizes of encoder and decoder.")
flags.DEFINE_integer("vocab", 10002, "Vocabulary.")
flags.DEFINE_integer("svi_steps", 5, "Refinement steps (savae).")
flags.DEFINE_integer("warmup", 5, "Untimed steps (tracing, warm-up).")
flags.DEFINE_integer("steps", 20, "Timed steps.")
flags.DEFINE_enum("role", "driver", ["driver", "worker"], "Internal: a measured process.")
flags.DEFINE_string("strategy", "default", "Internal: the worker's strategy.")
FLAGS = flags.FLAGS
ROOT = pathlib.Path(__file__).resolve().parents[1]


def measure_in_this_process():
  """Trains --warmup + --steps steps; prints the median seconds per step (the chief's)."""
  import numpy as np
  import keras
  from savae_tf import cluster, factories, methods
  from savae_tf.data import text
  from savae_tf.model import SemiAmortizedVAE, SVIConfig
  from savae_tf.networks.text import LSTMDecoder, LSTMEncoder

  strategy = factories.make_strategy(FLAGS.strategy)
  rng = np.random.default_rng(0)
  count = FLAGS.batch_size * (FLAGS.warmup + FLAGS.steps)
  sentences = [list(rng.integers(4, FLAGS.vocab, FLAGS.length)) for _ in range(count)]
  corpus = text.BatchedCorpus(sentences, FLAGS.batch_size, 0, seed=0)
  size = FLAGS.hidden
  with strategy.scope():
    keras.utils.set_random_seed(0)
    use_cudnn = methods.decoder_use_cudnn(FLAGS.model, SVIConfig().gradient)
    model = SemiAmortizedVAE(LSTMDecoder(FLAGS.vocab, size, size, 32, use_cudnn=use_cudnn),
                             LSTMEncoder(FLAGS.vocab, size, size, 32), mode=FLAGS.model,
                             latent_dim=32, svi_config=SVIConfig(steps=FLAGS.svi_steps))
    model.compile(optimizer=factories.make_optimizer("sgd", 1.0, 5.0))
    times = []

    class Clock(keras.callbacks.Callback):
      def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

      def on_train_batch_end(self, batch, logs=None):
        times.append(time.perf_counter() - self.start)

    model.fit(corpus.dataset(0), epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
  if cluster.is_chief():
    print(f"seconds per step: {np.median(times[FLAGS.warmup:]):.6f}", flush=True)


def run_row(workers):
  """Seconds per step of one plain process (workers None) or of a local cluster."""
  me = [str(pathlib.Path(__file__).resolve()), "--role=worker",
        *(f"--{name}={FLAGS[name].value}" for name in
          ("model", "batch_size", "length", "hidden", "vocab", "svi_steps", "warmup", "steps"))]
  if workers is None:
    command = [sys.executable, *me]
  else:
    command = [sys.executable, str(ROOT / "bin" / "launch_local_cluster.py"),
               f"--workers={workers}", "--", sys.executable, *me, "--strategy=multi_worker"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
  match = re.search(r"^seconds per step: ([\d.]+)$", result.stdout, re.MULTILINE)
  if result.returncode or not match:
    raise RuntimeError(f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
  return float(match.group(1))


def main(_):
  if FLAGS.role == "worker":
    measure_in_this_process()
    return
  print(describe_machine())
  print(f"{FLAGS.model}, batch {FLAGS.batch_size} x {FLAGS.length} tokens, hidden {FLAGS.hidden},"
        f" vocabulary {FLAGS.vocab}; median of {FLAGS.steps} steps")
  print("| run | ms per step | sentences per second | time / one process's |\n|---|---|---|---|")
  base = None
  for workers in [None] + [int(w) for w in FLAGS.workers]:
    seconds = run_row(workers)
    base = base or seconds
    name = "one process" if workers is None else f"{workers} worker(s), multi_worker"
    print(f"| {name} | {seconds * 1000:.1f} | {FLAGS.batch_size / seconds:.0f} | "
          f"{seconds / base:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
