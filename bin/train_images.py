"""Trains an image model (gated PixelCNN, VAE, SVI, VAE+SVI(+KL), SA-VAE) on binarized images.

  python bin/train_images.py --model=savae --model_dir=runs/mnist-savae        # MNIST subset
  python bin/train_images.py --dataset=omniglot --data_dir=chardata.mat --preset=omniglot \
      --model=savae --model_dir=runs/omniglot-savae

Killed at any moment, the same command resumes from the last checkpoint in --model_dir. Writes into
--model_dir: config.json and weights/ (the best validation model; what bin/export_savedmodel.py
loads), checkpoints/, logs/ (TensorBoard: metrics and pictures), pictures/*.png (reconstructions,
samples from the prior, a latent traversal), metrics.json (every epoch, then the test metrics of
the best model). Training images are binarized afresh every batch; validation and test once, with
--binarize_seed.
"""

import os
import sys

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU allocator then tracks its peak: --refine_gradient=auto measures exactly on a
# CPU too, as the benchmarks do (savae_tf.devices.PeakMemory).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import app
from absl import flags
import keras

from savae_tf import cluster
from savae_tf import export
from savae_tf import figures
from savae_tf import flags as savae_flags
from savae_tf import pictures
from savae_tf import runs
from savae_tf import training
from savae_tf.data import DataError
from savae_tf.data import images
from savae_tf.model import MODES
from savae_tf.networks.image import PAPER_KERNEL_SIZES, GatedPixelCNN, ResNetEncoder

# Per-example step for images: chosen on the MNIST subset's validation data (RESULTS.md).
savae_flags.define_svi_flags(per_example_lr=0.02)
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_training_flags(epochs=100, optimizer="adam", learning_rate=1e-3, warmup=10,
                                  batch_size=50)
savae_flags.define_run_flags(presets=["omniglot"])
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help
flags.DEFINE_enum("dataset", "mnist_subset", images.DATASETS,
                  "Image source (savae_tf/data/images.py): mnist_subset comes with `pip install "
                  "-e .[images]`; the others read --data_dir.")
flags.DEFINE_string("data_dir", None, "The directory or file of --dataset (fashion_mnist defaults "
                    f"to {images.FASHION_MNIST_DIR}).")
flags.DEFINE_integer("num_valid", None, "Validation images taken from the training set where the "
                     "source has no validation split (default: the source's, e.g. 2,000 for "
                     "OMNIGLOT).", lower_bound=1)
flags.DEFINE_integer("binarize_seed", 0, "Seed of the one-time binarization of validation and "
                     "test images (recorded, so numbers are reproducible).")
flags.DEFINE_integer("max_train_images", 0, "Use only the first N training images (0: all).",
                     lower_bound=0)
flags.DEFINE_integer("max_eval_images", 0, "Use only the first N validation and test images "
                     "(0: all).", lower_bound=0)
flags.DEFINE_enum("model", "savae", MODES, "Training variant (autoreg: the PixelCNN baseline).")
flags.DEFINE_integer("latent_dim", 32, "Latent size.", lower_bound=1)
flags.DEFINE_integer("enc_channels", 64, "Channels of the ResNet encoder.", lower_bound=1)
flags.DEFINE_integer("enc_stages", 3, "Residual stages (each halves the image).", lower_bound=1)
flags.DEFINE_integer("dec_channels", 32, "Channels of the gated PixelCNN.", lower_bound=1)
flags.DEFINE_list("kernel_sizes", [str(k) for k in PAPER_KERNEL_SIZES],
                  "Kernel size of each gated PixelCNN layer (odd).")
flags.DEFINE_integer("latent_feature_maps", 4, "Feature maps z is turned into for the decoder.",
                     lower_bound=1)
flags.DEFINE_bool("sync_batchnorm", False, "The encoder's BatchNorm statistics over the whole "
                  "batch across tf.distribute replicas (one all-reduce each), so that several "
                  "replicas or workers train as one device; off: each replica's own share.")
flags.DEFINE_integer("num_pictures", 8, "Images per row of the pictures (0: no pictures).",
                     lower_bound=0)
FLAGS = flags.FLAGS

# The paper's OMNIGLOT recipe.
PRESETS = {"omniglot": dict(optimizer="adam", learning_rate=1e-3, max_grad_norm=5.0,
                            batch_size=50, epochs=100, warmup=10, svi_steps=20,
                            svi_step_scale="batch_mean", svi_lr=1.0, momentum=0.5, svi_max_grad_norm=5.0, latent_dim=32, enc_channels=64,
                            enc_stages=3, dec_channels=32,
                            kernel_sizes=[str(k) for k in PAPER_KERNEL_SIZES],
                            latent_feature_maps=4, num_valid=2000)}


def build_model(image_shape, train):
  kernel_sizes = [int(k) for k in FLAGS.kernel_sizes]
  encoder = ResNetEncoder(FLAGS.latent_dim, FLAGS.enc_channels, FLAGS.enc_stages, image_shape,
                          FLAGS.sync_batchnorm)
  latent = 0 if FLAGS.model == "autoreg" else FLAGS.latent_dim
  decoder = GatedPixelCNN(latent, FLAGS.dec_channels, kernel_sizes, FLAGS.latent_feature_maps,
                          image_shape)
  return savae_flags.model_from_flags(decoder, encoder, FLAGS.model, FLAGS.latent_dim,
                                      len(train), train.largest_batch())


def main(_):
  savae_flags.apply_preset(PRESETS)
  strategy = savae_flags.strategy()
  savae_flags.claim_run_directory([sys.modules[__name__], savae_flags], strategy)
  savae_flags.set_precision_policy()
  keras.utils.set_random_seed(FLAGS.seed)
  try:
    splits = images.load(FLAGS.dataset, FLAGS.data_dir, FLAGS.seed, FLAGS.num_valid)
  except DataError as error:
    raise app.UsageError(str(error)) from None
  train_images = splits.train[:FLAGS.max_train_images or None]
  valid_images, test_images = (x[:FLAGS.max_eval_images or None]
                               for x in (splits.valid, splits.test))
  train = images.ImageBatches(train_images, FLAGS.batch_size, seed=FLAGS.seed)
  valid, test = (images.ImageBatches(x, FLAGS.batch_size, binarize_seed=FLAGS.binarize_seed + i)
                 for i, x in enumerate((valid_images, test_images)))
  print(f"data: {FLAGS.dataset}, {train.num_images} / {valid.num_images} / {test.num_images} "
        f"images of {splits.image_shape[0]}x{splits.image_shape[1]}, {len(train)} batches per "
        "epoch", flush=True)
  try:
    with strategy.scope():
      model = build_model(splits.image_shape, train)
  except ValueError as error:  # even kernel sizes, too many stages
    raise app.UsageError(str(error)) from None
  try:
    best = runs.train_and_test(
        model, None, train, valid.dataset(), test.dataset(), strategy, FLAGS.model_dir,
        FLAGS.epochs, FLAGS.checkpoint_every, FLAGS.num_samples,
        training.flag_values(FLAGS, [sys.modules[__name__], savae_flags]))
  except (training.NonFiniteLossError, cluster.LostWorkerError) as error:
    sys.exit(f"error: {error}")
  if best is None:  # a multi-worker cluster's other worker: the chief writes everything
    return
  if FLAGS.num_pictures:
    count = min(FLAGS.num_pictures, test.num_images)
    print("drawing the pictures (pixel by pixel)", flush=True)
    try:
      paths = pictures.save_pictures(best, test.images[..., None], FLAGS.model_dir, count,
                                     best.test_svi_steps, FLAGS.seed, progress=True)
      print("pictures: " + ", ".join(sorted(paths.values())))
    except figures.MissingPlotting as error:
      print(f"pictures skipped: {error}")
  if FLAGS.export_dir:
    print(f"SavedModel written to {export.export(best, None, FLAGS.export_dir)}")


if __name__ == "__main__":
  savae_flags.run(main)
