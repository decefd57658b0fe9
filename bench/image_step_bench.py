"""Benchmark: time and peak memory of one training step of every image variant, as a ratio to a
VAE step, and images per second; and, for each K, the least multiply work any exact SA-VAE
gradient needs as a multiple of a VAE step's (`timing.exact_savae_floor`).

The default configuration is the paper's OMNIGLOT model (ResNet encoder of three 64-channel
stages, gated PixelCNN of 12 layers of 32 channels, latent 32, 28 x 28) at batch 16, the batch
the paper's code was measured with on this kind of CPU (VAE 0.43 s, SA-VAE K=20
16.2 s, 37.5x). Each step is `SemiAmortizedVAE.train_step` compiled with `tf.function` on one
fixed binary batch; the median of `--repeats` calls after a warm-up.

  python bench/image_step_bench.py                                   # the paper's sizes
  python bench/image_step_bench.py --dec_channels=16 --kernel_sizes=7,5,5,3,3 --enc_channels=16 \
      --batch=50 --steps=10                                          # the MNIST runs of RESULTS.md
"""


# bench/timing.py, imported first: it configures TensorFlow.
from timing import (VARIANTS, describe_machine, exact_savae_floor, measure, refiner_gradient,
                    resolve_auto, step_configs, timed_step, latent_size)

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.image import PAPER_KERNEL_SIZES, GatedPixelCNN, ResNetEncoder


flags.DEFINE_integer("latent_dim", 32, "Latent size.")
flags.DEFINE_integer("enc_channels", 64, "Encoder channels.")
flags.DEFINE_integer("enc_stages", 3, "Encoder stages.")
flags.DEFINE_integer("dec_channels", 32, "PixelCNN channels.")
flags.DEFINE_list("kernel_sizes", [str(k) for k in PAPER_KERNEL_SIZES], "PixelCNN kernels.")
flags.DEFINE_integer("size", 28, "Image height and width.")
flags.DEFINE_integer("batch", 16, "Images per batch.")
flags.DEFINE_list("steps", ["20"], "Values of K.")
flags.DEFINE_list("gradients", ["reverse"],
                  "Gradient modes for savae; MODE:N keeps the last N steps (`keep_steps`); "
                  "'auto' as --refine_gradient=auto chooses (printed).")
flags.DEFINE_list("variants", list(VARIANTS),
                  "Which variants to time (the VAE step, the ratios' unit, always runs).")
flags.DEFINE_integer("repeats", 3, "Timed steps per configuration (median reported).")
FLAGS = flags.FLAGS


def decoder_forward_flops():
  """Multiply-add FLOPs of one PixelCNN forward pass over the batch (convolutions and the
  latent-map projection)."""
  c, pixels = FLAGS.dec_channels, FLAGS.size * FLAGS.size
  in_channels, per_pixel = 1 + 4, 0
  for k in (int(k) for k in FLAGS.kernel_sizes):
    per_pixel += ((k // 2 + 1) * k + (k // 2 + 1)) * in_channels * 2 * c  # vertical, horizontal
    per_pixel += 2 * c * 2 * c + c * c  # link, horizontal 1x1
    in_channels = c
  per_pixel += c  # output 1x1
  return 2 * FLAGS.batch * (pixels * per_pixel + FLAGS.latent_dim * 4 * pixels)


def encoder_forward_flops():
  """Multiply-add FLOPs of one ResNet encoder forward pass over the batch."""
  c, size, in_channels, total = FLAGS.enc_channels, FLAGS.size, 1, 0
  for _ in range(FLAGS.enc_stages):
    per_pixel = 9 * in_channels * c + 9 * c * c + (in_channels * c if in_channels != c else 0)
    total += size * size * per_pixel + (size // 2) ** 2 * 4 * c * c  # block, 2x2 stride-2 conv
    size, in_channels = size // 2, c
  total += 2 * size * size * c * FLAGS.latent_dim  # mean and logvar heads
  return 2 * FLAGS.batch * total


def make_step(mode, batch, steps=0, gradient="none"):
  keras.utils.set_random_seed(0)
  shape = (FLAGS.size, FLAGS.size)
  encoder = ResNetEncoder(FLAGS.latent_dim, FLAGS.enc_channels, FLAGS.enc_stages, shape)
  decoder = GatedPixelCNN(latent_size(mode, FLAGS.latent_dim), FLAGS.dec_channels,
                          [int(k) for k in FLAGS.kernel_sizes], image_shape=shape)
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=FLAGS.latent_dim,
                           svi_config=SVIConfig(steps=steps, **refiner_gradient(gradient)))
  model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=5.0))
  resolve_auto(model, batch, gradient)
  return model


def main(_):
  rng = np.random.default_rng(0)
  batch = {"images": tf.constant(
      (rng.random((FLAGS.batch, FLAGS.size, FLAGS.size, 1)) < 0.2).astype(np.float32))}
  configs = step_configs([int(k) for k in FLAGS.steps], FLAGS.gradients, FLAGS.variants)
  print(describe_machine())
  print(f"image model: {FLAGS.size}x{FLAGS.size}, encoder {FLAGS.enc_stages} x "
        f"{FLAGS.enc_channels} channels, PixelCNN {len(FLAGS.kernel_sizes)} layers x "
        f"{FLAGS.dec_channels} channels (kernels {','.join(FLAGS.kernel_sizes)}), latent "
        f"{FLAGS.latent_dim}, batch {FLAGS.batch}")
  for k in [int(k) for k in FLAGS.steps]:
    floor = exact_savae_floor(k, decoder_forward_flops(), encoder_forward_flops())
    print(f"K = {k}: an exact SA-VAE step needs at least {floor:.1f}x a VAE step's multiply "
          "FLOPs")
  print("| variant | K | gradient | s per step | x VAE | images/s | peak MiB |")
  print("|---|---|---|---|---|---|---|")
  vae_time = None
  for mode, k, gradient in configs:
    seconds, peak = measure(timed_step(make_step(mode, batch, k, gradient), batch), FLAGS.repeats)
    if mode == "vae":
      vae_time = seconds
    ratio = f"{seconds / vae_time:.1f}" if vae_time else "-"
    print(f"| {mode} | {k} | {gradient} | {seconds:.3f} | {ratio} | {FLAGS.batch / seconds:.1f} "
          f"| {peak:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
