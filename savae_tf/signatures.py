"""The signatures every exported model has (`encode`, `refine`, `score`, `elbo`), and the specs its
domain's signatures share. A domain's export module (`Domain.export_module`) subclasses
`ModelExport` with how raw inputs become a batch and its own generation signatures; the contract
is export/README.md, written by `savae_tf.export.export`.
"""

import tensorflow as tf

from savae_tf import scoring

STRINGS = tf.TensorSpec([None], tf.string, name="sentences")
# Any rank, so that a wrong shape reaches the in-graph check and its message.
IMAGES = tf.TensorSpec(None, tf.float32, name="images")
INT = lambda name: tf.TensorSpec([], tf.int32, name=name)  # noqa: E731
FLOAT = lambda name: tf.TensorSpec([], tf.float32, name=name)  # noqa: E731


def _taking_one_dict(function):
  """`function` (a tf.function with an input signature) called with one dict of its inputs."""
  # The concrete function names every input as its signature does: the TensorSpec's name, else
  # the argument's. Tracing here costs nothing more: saving traces every signature anyway.
  specs, _ = function.get_concrete_function().structured_input_signature
  names = [spec.name for spec in specs]

  @tf.function(input_signature=[{spec.name: spec for spec in specs}], autograph=False)
  def call(inputs):
    return function(*[inputs[name] for name in names])

  return call


def check_steps(steps):
  return tf.debugging.assert_non_negative(steps, message="steps must be >= 0")


class ModelExport(tf.Module):
  """The signatures every exported SemiAmortizedVAE has: `encode`, `refine`, `score`, `elbo`.

  Subclasses say how raw inputs become a batch (`read`, with the contract's errors) and add their
  domain's generation signatures. Why a tf.Module that tracks the variables, rather than the Keras
  model itself: a tf.Module holding a Keras 3 model whose `call` takes several arguments fails to
  save (the saver tries to trace the model's own call), and `keras.export.ExportArchive` would hide
  the lookup table and the string handling behind its own endpoint API. Here the functions close
  over the model's methods and the module tracks what they read. It tracks each Keras variable's
  underlying `tf.Variable` (`.value`): tracking the Keras wrapper saves a SavedModel that
  `tf.saved_model.load` restores but a session-based loader (TF Serving's C++ loader,
  `saved_model_cli run`) does not ("Could not find variable").
  """

  def __init__(self, model, input_spec: tf.TensorSpec, name: str):
    super().__init__(name=name)
    self._hold_untracked(model)
    self.model_variables = [v.value for v in model.variables]
    self.latent_dim = model.latent_dim
    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[input_spec], autograph=False)
    def encode(inputs):
      data = self.read(inputs)
      mean, logvar = model.initial_params(model.observe(data))
      return {"mean": mean, "logvar": logvar}

    @tf.function(input_signature=[input_spec, latent_spec, latent_spec, INT("steps")],
                 autograph=False)
    def refine(inputs, mean, logvar, steps):
      data = self.read(inputs)
      with tf.control_dependencies([check_steps(steps), tf.debugging.assert_equal(
          tf.shape(mean)[0], tf.shape(inputs)[0],
          message=f"mean and logvar need one row per {input_spec.name[:-1]}")]):
        mean_k, logvar_k = model.refine_for_evaluation(data, mean, logvar, steps)
      return {"mean": mean_k, "logvar": logvar_k}

    @tf.function(input_signature=[input_spec, INT("steps"), INT("num_samples")], autograph=False)
    def score(inputs, steps, num_samples):
      data = self.read(inputs)
      with tf.control_dependencies([check_steps(steps), tf.debugging.assert_positive(
          num_samples, message="num_samples must be >= 1")]):
        out = model.score(data, steps, num_samples)
      return self.score_outputs(out)

    @tf.function(input_signature=[input_spec, latent_spec, latent_spec, INT("num_samples"),
                                  INT("seed")], autograph=False)
    def elbo(inputs, mean, logvar, num_samples, seed):
      data = self.read(inputs)
      with tf.control_dependencies([tf.debugging.assert_positive(
          num_samples, message="num_samples must be >= 1"), tf.debugging.assert_equal(
          tf.shape(mean)[0], tf.shape(inputs)[0],
          message=f"mean and logvar need one row per {input_spec.name[:-1]}")]):
        return scoring.elbo_estimate(model, data, mean, logvar, num_samples, seed)

    self.encode, self.refine, self.score, self.elbo = encode, refine, score, elbo

  @tf.__internal__.tracking.no_automatic_dependency_tracking
  def _hold_untracked(self, model):
    """Keeps the Keras model for the helpers below without making it a saved dependency."""
    self.model = model

  def read(self, inputs):
    """The raw signature input as a model batch, with the contract's checks."""
    raise NotImplementedError

  def score_outputs(self, out):
    batch = tf.shape(out["nll_bound"])[0]
    empty = tf.zeros([batch, 0])  # the language model has no latent
    return {"nll_bound": out["nll_bound"], "refined_nll_bound": out["refined_nll_bound"],
            "kl": out["kl"], "iw_nll": out["iw_nll"], "mean": out.get("mean", empty),
            "logvar": out.get("logvar", empty), "z": out.get("z", empty),
            "mean0": out.get("mean0", empty), "logvar0": out.get("logvar0", empty),
            "z0": out.get("z0", empty)}

  def refined_mean(self, inputs, steps):
    """The posterior mean after `steps` refinement steps from the encoder's proposal."""
    data = self.read(inputs)
    mean, logvar = self.model.initial_params(self.model.observe(data))
    with tf.control_dependencies([check_steps(steps)]):
      return self.model.refine_for_evaluation(data, mean, logvar, steps).mean

  def prior_sample(self, num, seed):
    with tf.control_dependencies([tf.debugging.assert_non_negative(
        num, message="num must be >= 0")]):
      return tf.random.stateless_normal([num, self.latent_dim], tf.stack([seed, 1]))

  def extra_signatures(self):
    """The signatures only this data kind has."""
    return {}

  def latent(self, z):  # decoders without a latent take no z
    return z if self.latent_dim else None

  def functions(self):
    """{signature name: its tf.function}, without the `serving_default` alias of `score`."""
    return {"score": self.score, "encode": self.encode, "refine": self.refine,
            "elbo": self.elbo, "generate": self.generate, "sample": self.sample, "reconstruct": self.reconstruct,
            **self.extra_signatures()}

  def signatures(self):
    """{name: concrete function}; in memory they take the same keyword inputs as when loaded."""
    concrete = {name: f.get_concrete_function() for name, f in self.functions().items()}
    return {"serving_default": concrete["score"], **concrete}

  def add_dict_endpoints(self):
    """Sets `<name>_dict` beside every signature: the same function taking one dict.

    Keras' `TFSMLayer` calls its endpoint with a single input structure, which a signature's
    several keyword arguments cannot take. Each one-dict endpoint is keyed exactly as its
    signature's inputs, so a request is the same dict either way. `export` adds them: only a
    saved module needs them.
    """
    for name, function in self.functions().items():
      setattr(self, name + "_dict", _taking_one_dict(function))

