"""Text data: the vocabulary, shared by training, evaluation and the exported SavedModel.

A sentence is a string of whitespace-separated tokens. Encoded, it is `<s> w_1 ... w_n </s>`
(the end token only when the vocabulary has one); the decoder predicts every token after `<s>`.
"""

import collections
import json
from typing import Iterable, List, Optional, Sequence

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
