"""ResNet encoder and gated PixelCNN decoder for binarized images (Kim et al. 2018, Section 5.3).

Images are float32 [batch, height, width, 1] with values in {0, 1} (or [0, 1] as Bernoulli
means). The decoder models p(x | z) = prod_i Bernoulli(x_i; sigmoid(logit_i(x_<i, z))) with pixels
in raster order (row by row, left to right).

`GatedPixelCNN` has the decoder interface `SemiAmortizedVAE` and `refine` use:
  `prepare(images, training, seed)`: the work that does not depend on z (here: the images themselves);
  `logits(context, z, training, seed)`: Bernoulli logits [batch, height, width, 1].
Under a mixed-precision policy the networks compute in its compute dtype (sublayers inherit the
network's policy) and take z and return logits, means and log-variances in its variable dtype
(float32), so lambda, the refiner and the losses stay in float32.
"""

from typing import Sequence

import keras
import tensorflow as tf

from savae_tf.distributions import GaussianParams

PAPER_KERNEL_SIZES = (9, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3)


def _he_normal():
  """PyTorch-reference Linear init of the paper's image models: N(0, 2 / fan_in), untruncated."""
  return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _pad(x, top=0, left=0, right=0):
  return tf.pad(x, [[0, 0], [top, 0], [left, right], [0, 0]])


def _shift_down(x):
  """Row r takes row r - 1 (row 0 zeros): output at row r then depends on rows < r only."""
  return _pad(x, top=1)[:, :-1]


def _shift_right(x):
  """Column c takes column c - 1: output at pixel (r, c) then excludes the pixel itself."""
  return _pad(x, left=1)[:, :, :-1]


def _gate(x):
  a, b = tf.split(x, 2, axis=-1)
  return tf.tanh(a) * tf.sigmoid(b)


def _conv(channels, kernel, in_channels, padding="valid", **kwargs):
  layer = keras.layers.Conv2D(channels, kernel, padding=padding, **kwargs)
  layer.build((None, None, None, in_channels))
  return layer


@keras.saving.register_keras_serializable(package="savae_tf")
class GatedPixelCNN(keras.layers.Layer):
  """p(x | z): a gated PixelCNN (van den Oord et al. 2016) conditioned on z as in the paper.

  z -> Linear(latent_dim -> F * H * W) -> F feature maps, concatenated to the image and fed to the
  first layer only. Each layer l (kernel k_l, C channels) has
    vertical:   v' = gate(shift_down(conv_{(k//2+1) x k}(v)))      rows strictly above
    horizontal: h' = conv_1x1(gate(conv_{1 x (k//2+1)}(h) + conv_1x1(shift_down(...))))
                (+ h for layers after the first; the first layer's horizontal conv is also shifted
                right one column, mask 'A', so a pixel never sees itself)
  with gate(a, b) = tanh(a) * sigmoid(b). A 1x1 conv of the last horizontal stack gives the logits.
  The vertical stack is shifted down in every layer, as in the paper's code, so every feature at
  row r depends on rows < r only. Because z enters through the masked first layer, pixel i sees
  the latent maps at pixels before i (the first pixel sees no z, as in the paper's model). With
  `latent_dim=0` it is the PixelCNN baseline.
  """

  domain = "images"  # savae_tf.domains

  def __init__(self, latent_dim: int = 32, channels: int = 32,
               kernel_sizes: Sequence[int] = PAPER_KERNEL_SIZES, latent_feature_maps: int = 4,
               image_shape: Sequence[int] = (28, 28), **kwargs):
    super().__init__(**kwargs)
    if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
      raise ValueError(f"kernel_sizes must be odd and non-empty; got {list(kernel_sizes)}.")
    self.latent_dim, self.channels = latent_dim, channels
    self.kernel_sizes, self.image_shape = tuple(kernel_sizes), tuple(image_shape)
    self.latent_feature_maps = latent_feature_maps if latent_dim else 0
    height, width = self.image_shape
    if self.latent_feature_maps:
      self.latent_maps = keras.layers.Dense(self.latent_feature_maps * height * width,
                                            kernel_initializer=_he_normal(),
                                            dtype=self.dtype_policy)
      self.latent_maps.build((None, latent_dim))
    # Sublayers are attributes, not list items: tf.train.Checkpoint does not follow Keras 3's
    # tracked lists, so layers in a list would be missing from checkpoints.
    in_channels = 1 + self.latent_feature_maps
    for index, k in enumerate(self.kernel_sizes):
      setattr(self, f"gated_{index}", GatedMaskedLayer(k, channels, in_channels, first=index == 0,
                                                       dtype=self.dtype_policy))
      in_channels = channels
    self.out = _conv(1, 1, channels, dtype=self.dtype_policy)
    self.built = True

  @property
  def gated_layers(self):
    return [getattr(self, f"gated_{index}") for index in range(len(self.kernel_sizes))]

  def get_config(self):
    return {**super().get_config(), "latent_dim": self.latent_dim, "channels": self.channels,
            "kernel_sizes": list(self.kernel_sizes),
            "latent_feature_maps": self.latent_feature_maps,
            "image_shape": list(self.image_shape)}

  @property
  def floats_per_target(self):
    """Floats alive per pixel in a forward pass (two pre-gate stacks, the link and the gated
    outputs: about 8 C), which sizes the importance-sampling chunks."""
    return 8 * self.channels

  def prepare(self, images, training=False, seed=None):
    del training, seed  # no dropout
    return tf.cast(images, self.compute_dtype)

  def logits(self, context, z=None, training=False, seed=None):
    del training, seed  # no dropout
    x = context
    if self.latent_feature_maps:
      height, width = self.image_shape
      maps = tf.reshape(self.latent_maps(tf.cast(z, self.compute_dtype)),
                        [-1, self.latent_feature_maps, height, width])
      x = tf.concat([x, tf.transpose(maps, [0, 2, 3, 1])], axis=-1)
    vertical, horizontal = x, x
    for layer in self.gated_layers:
      vertical, horizontal = layer(vertical, horizontal)
    return tf.cast(self.out(horizontal), self.dtype)

  def call(self, images, z=None):
    return self.logits(self.prepare(images), z)


@keras.saving.register_keras_serializable(package="savae_tf")
class GatedMaskedLayer(keras.layers.Layer):
  """One gated masked layer: (vertical, horizontal) stacks in, the next layer's stacks out."""

  def __init__(self, kernel_size, channels, in_channels, first, **kwargs):
    super().__init__(**kwargs)
    self.kernel_size, self.first = kernel_size, first
    self.channels, self.in_channels = channels, in_channels
    k = kernel_size
    policy = self.dtype_policy
    self.vertical = _conv(2 * channels, (k // 2 + 1, k), in_channels, dtype=policy)
    self.link = _conv(2 * channels, 1, 2 * channels, dtype=policy)
    self.horizontal = _conv(2 * channels, (1, k // 2 + 1), in_channels, dtype=policy)
    self.horizontal_out = _conv(channels, 1, channels, dtype=policy)
    self.built = True

  def get_config(self):
    return {**super().get_config(), "kernel_size": self.kernel_size, "channels": self.channels,
            "in_channels": self.in_channels, "first": self.first}

  def call(self, vertical, horizontal):
    pad = self.kernel_size // 2
    v = _shift_down(self.vertical(_pad(vertical, top=pad, left=pad, right=pad)))
    h = self.horizontal(_pad(horizontal, left=pad))
    if self.first:  # mask 'A': the pixel itself is excluded
      h = _shift_right(h)
    h = self.horizontal_out(_gate(h + self.link(v)))
    return _gate(v), h if self.first else h + horizontal


@keras.saving.register_keras_serializable(package="savae_tf")
class ResidualBlock(keras.layers.Layer):
  """relu(BN(conv3x3(relu(BN(conv3x3(x))))) + skip(x)); skip is a 1x1 conv when channels change.

  BatchNorm has PyTorch's defaults (momentum 0.9, epsilon 1e-5), as in the paper's code;
  `synchronized`: its batch statistics over every tf.distribute replica, not this replica's share.
  """

  def __init__(self, channels, in_channels, synchronized=False, **kwargs):
    super().__init__(**kwargs)
    self.channels, self.in_channels, self.synchronized = channels, in_channels, synchronized
    policy = self.dtype_policy
    self.conv1 = _conv(channels, 3, in_channels, padding="same", dtype=policy)
    self.conv2 = _conv(channels, 3, channels, padding="same", dtype=policy)
    self.norm1, self.norm2 = (
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=synchronized,
                                        dtype=policy) for _ in range(2))
    self.norm1.build((None, None, None, channels))
    self.norm2.build((None, None, None, channels))
    self.skip = (_conv(channels, 1, in_channels, dtype=policy) if in_channels != channels
                 else None)
    self.built = True

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "in_channels": self.in_channels,
            "synchronized": self.synchronized}

  def call(self, x, training=False):
    y = tf.nn.relu(self.norm1(self.conv1(x), training=training))
    y = self.norm2(self.conv2(y), training=training)
    return tf.nn.relu(y + (x if self.skip is None else self.skip(x)))


@keras.saving.register_keras_serializable(package="savae_tf")
class ResNetEncoder(keras.layers.Layer):
  """q(z | x): `stages` x [residual block -> 2x2 conv, stride 2], flatten, linear mean and logvar.

  28 x 28 -> 14 -> 7 -> 3 with the paper's three stages of 64 channels. BatchNorm uses batch
  statistics with `training=True` and its moving averages otherwise; with
  `synchronized_batchnorm` the batch statistics are the whole batch's under tf.distribute (one
  all-reduce per BatchNorm), so that several replicas train as one device does; otherwise each
  replica normalises by its own share.
  """

  def __init__(self, latent_dim: int = 32, channels: int = 64, stages: int = 3,
               image_shape: Sequence[int] = (28, 28), synchronized_batchnorm: bool = False,
               **kwargs):
    super().__init__(**kwargs)
    self.latent_dim, self.channels, self.stages = latent_dim, channels, stages
    self.synchronized_batchnorm = synchronized_batchnorm
    self.image_shape = tuple(image_shape)
    in_channels = 1
    height, width = self.image_shape
    for index in range(stages):  # attributes, not a list: see GatedPixelCNN
      setattr(self, f"block_{index}", ResidualBlock(channels, in_channels,
                                                    synchronized_batchnorm,
                                                    dtype=self.dtype_policy))
      setattr(self, f"downsample_{index}", _conv(channels, 2, channels, strides=2,
                                                 dtype=self.dtype_policy))
      in_channels = channels
      height, width = height // 2, width // 2
    if height < 1 or width < 1:
      raise ValueError(f"{stages} stages downsample a {self.image_shape} image to nothing.")
    features = height * width * channels
    self.mean_head = keras.layers.Dense(latent_dim, kernel_initializer=_he_normal(),
                                        dtype=self.dtype_policy)
    self.logvar_head = keras.layers.Dense(latent_dim, kernel_initializer=_he_normal(),
                                          dtype=self.dtype_policy)
    self.mean_head.build((None, features))
    self.logvar_head.build((None, features))
    self.built = True

  def get_config(self):
    return {**super().get_config(), "latent_dim": self.latent_dim, "channels": self.channels,
            "stages": self.stages, "image_shape": list(self.image_shape),
            "synchronized_batchnorm": self.synchronized_batchnorm}

  def call(self, images, training=False):
    x = images
    for index in range(self.stages):
      x = getattr(self, f"block_{index}")(x, training=training)
      x = getattr(self, f"downsample_{index}")(x)
    features = tf.reshape(x, [tf.shape(x)[0], -1])
    return GaussianParams(*(tf.cast(head(features), self.dtype)
                            for head in (self.mean_head, self.logvar_head)))
