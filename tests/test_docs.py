"""The documentation's links resolve, and nothing in the repository cites a file outside it."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Markdown files whose relative links must resolve (paths relative to the repository).
LINKED_DOCS = ("README.md", "RESULTS.md", "BENCHMARKS.md", os.path.join("export", "README.md"))

# Where a citation of a file outside the repository is looked for: these folders, and the
# top-level markdown files.
SCANNED_DIRS = ("savae_tf", "bin", "bench", "tests", "docs")

# Names of files that live outside the repository, and the relative path that leads out of it.
# Written with escaped dots and groups, so that this file does not match its own patterns.
OUTSIDE_REFERENCES = re.compile(
    r"(?<![\w.-])(?:DESIGN|paper|peers|data)\.md\b|\.\./(?:shared)\b|/work/(?:shared)\b")

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)[^`]*?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
_EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//|#)")


def markdown_links(text):
  """The link targets of markdown `text`, outside code blocks and code spans: (line, target)."""
  # Blank out code while keeping line numbers: fenced blocks, then inline code spans.
  text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
  text = _INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
  links = []
  for pattern in (_INLINE_LINK, _REFERENCE_LINK):
    for match in pattern.finditer(text):
      links.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
  return sorted(links)


def broken_links(path):
  """'path:line: target' for each relative link of the markdown file `path` (relative to the
  repository) whose file does not exist."""
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    text = f.read()
  broken = []
  for line, target in markdown_links(text):
    if _EXTERNAL.match(target):
      continue  # a URL, a mail address, or an anchor in the same page
    file_part = target.split("#", 1)[0].split("?", 1)[0]
    resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file_part))
    inside = os.path.commonpath([resolved, ROOT]) == ROOT
    if not inside or not os.path.exists(resolved):
      broken.append(f"{path}:{line}: {target}")
  return broken


def docs_pages():
  return sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                if name.endswith(".md"))


def tracked_files():
  """Files tracked by git under SCANNED_DIRS, and the top-level markdown files (relative
  paths). Without a git checkout, the files found on disk there instead."""
  try:
    listing = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], check=True,
                             capture_output=True).stdout.decode("utf-8")
    files = [name for name in listing.split("\0") if name]
  except (OSError, subprocess.CalledProcessError):
    files = [name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name))]
    for directory in SCANNED_DIRS:
      for parent, dirs, names in os.walk(os.path.join(ROOT, directory)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        files += [os.path.relpath(os.path.join(parent, name), ROOT) for name in names]
  return sorted(name for name in files
                if name.split("/")[0] in SCANNED_DIRS or ("/" not in name and name.endswith(".md")))


def outside_references(path):
  """'path:line: text' for each line of `path` that cites a file outside the repository."""
  try:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (UnicodeDecodeError, FileNotFoundError):
    return []  # binary files say nothing; a file deleted but still tracked neither
  return [f"{path}:{number}: {line.strip()}" for number, line in enumerate(lines, 1)
          if OUTSIDE_REFERENCES.search(line)]


def test_the_docs_folder_has_its_pages():
  for page in ("README.md", "method.md", "methods.md", "conventions.md", "provenance.md"):
    assert os.path.isfile(os.path.join(ROOT, "docs", page)), page


@pytest.mark.parametrize("path", LINKED_DOCS + tuple(docs_pages()))
def test_relative_links_resolve(path):
  assert broken_links(path) == [], "links to missing files:\n" + "\n".join(broken_links(path))


def test_docs_index_lists_every_page():
  with open(os.path.join(ROOT, "docs", "README.md"), encoding="utf-8") as f:
    linked = {target.split("#")[0] for _, target in markdown_links(f.read())}
  missing = [page for page in docs_pages() if os.path.basename(page) not in linked
             and not page.endswith("README.md")]
  assert not missing, f"docs/README.md does not link to {missing}"


def test_nothing_cites_a_file_outside_the_repository():
  files = tracked_files()
  assert any(name.startswith("savae_tf/") for name in files)  # the listing found the package
  found = [hit for name in files for hit in outside_references(name)]
  assert not found, ("files outside the repository are cited (the repository must stand "
                     "alone):\n" + "\n".join(found))


def test_the_checks_catch_what_they_look_for():
  text = "See [a](docs/nowhere.md) and [b](https://example.org), `[c](skipped.md)`.\n"
  assert markdown_links(text) == [(1, "docs/nowhere.md"), (1, "https://example.org")]
  assert markdown_links("```\n[d](in_a_fence.md)\n```\n[e](after.md)\n") == [(4, "after.md")]
  assert markdown_links("[f]: ref.md\n") == [(1, "ref.md")]
  assert markdown_links("a `span\nover lines` b\n[g](third.md)\n") == [(3, "third.md")]
  for cited in ("as the DESIGN" + ".md says", "see reference/paper" + ".md",
                "peers" + ".md", "the data" + ".md file", ".." + "/shared/x"):
    assert OUTSIDE_REFERENCES.search(cited), cited
  for innocent in ("metadata" + ".md", "/shared/runs/ptb-savae", "paper.mdx", "data.mdb"):
    assert not OUTSIDE_REFERENCES.search(innocent), innocent
