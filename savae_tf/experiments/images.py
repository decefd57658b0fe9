"""The image experiment from bin/train_images.py's flags (`savae_tf.flags.define_image_flags`):
the image source, the ResNet encoder and gated PixelCNN decoder, the pictures."""

from absl import app
from absl import flags

from savae_tf import factories
from savae_tf.data import DataError
from savae_tf.data import images
from savae_tf.experiments.runner import Experiment
from savae_tf.networks.image import PAPER_KERNEL_SIZES, GatedPixelCNN, ResNetEncoder

FLAGS = flags.FLAGS

# The paper's OMNIGLOT recipe.
PRESETS = {"omniglot": dict(optimizer="adam", learning_rate=1e-3, max_grad_norm=5.0,
                            batch_size=50, epochs=100, warmup=10, svi_steps=20,
                            svi_step_scale="batch_mean", svi_lr=1.0, momentum=0.5,
                            svi_max_grad_norm=5.0, latent_dim=32, enc_channels=64,
                            enc_stages=3, dec_channels=32,
                            kernel_sizes=[str(k) for k in PAPER_KERNEL_SIZES],
                            latent_feature_maps=4, num_valid=2000)}


def _batches():
  """(image shape, train, valid, test) of the flags; bad data is a usage error naming it."""
  try:
    splits = images.load(FLAGS.dataset, FLAGS.data_dir, FLAGS.seed, FLAGS.num_valid)
  except DataError as error:
    raise app.UsageError(str(error)) from None
  train = images.ImageBatches(splits.train[:FLAGS.max_train_images or None], FLAGS.batch_size,
                              seed=FLAGS.seed)
  valid, test = (images.ImageBatches(x[:FLAGS.max_eval_images or None], FLAGS.batch_size,
                                     binarize_seed=FLAGS.binarize_seed + i)
                 for i, x in enumerate((splits.valid, splits.test)))
  print(f"data: {FLAGS.dataset}, {train.num_images} / {valid.num_images} / {test.num_images} "
        f"images of {splits.image_shape[0]}x{splits.image_shape[1]}, {len(train)} batches per "
        "epoch", flush=True)
  return splits.image_shape, train, valid, test


def _model(image_shape, train):
  encoder = ResNetEncoder(FLAGS.latent_dim, FLAGS.enc_channels, FLAGS.enc_stages, image_shape,
                          FLAGS.sync_batchnorm)
  decoder = GatedPixelCNN(factories.latent_dim(FLAGS.method, FLAGS.latent_dim),
                          FLAGS.dec_channels, [int(k) for k in FLAGS.kernel_sizes],
                          FLAGS.latent_feature_maps, image_shape)
  return factories.model_from_flags(decoder, encoder, FLAGS.method, FLAGS.latent_dim,
                                    len(train), train.largest_batch())


def experiment(binary) -> Experiment:
  """The run bin/train_images.py's flags ask for (`binary`: its module, whose flags define it)."""
  strategy, modules = factories.start_run(binary, PRESETS)
  image_shape, train, valid, test = _batches()
  try:
    with strategy.scope():
      model = _model(image_shape, train)
  except ValueError as error:  # even kernel sizes, too many stages
    raise app.UsageError(str(error)) from None
  return Experiment(model, train, valid.dataset(), test, FLAGS.model_dir, FLAGS.epochs,
                    strategy=strategy, checkpoint_every=FLAGS.checkpoint_every,
                    num_samples=FLAGS.num_samples, flags=factories.flag_values(FLAGS, modules),
                    num_pictures=FLAGS.num_pictures, export_dir=FLAGS.export_dir,
                    gaps=factories.gap_config(), gap_examples=FLAGS.gap_examples)
