"""The zoo generators' tokenizer: CLIP's BPE restricted to the shapes world's words.

CLIP's full vocabulary (49,408 tokens) would make the token-embedding table most of every tiny text
encoder and its tokenizer.json 1.7 MB per pipeline. Keeping only the merges that CLIP's BPE applies to
the shapes words tokenizes those words exactly as CLIP does (a merge never used on them is never the
lowest-ranked pair present), in a vocabulary of a few hundred tokens; any other word maps to
<|endoftext|>, CLIP's unknown token. It is a plain CLIPTokenizer, saved and loaded like SD's.
"""

from __future__ import annotations

import string

from models.shapes.specs import COLORS, NUMBER_WORDS, PLURALS, RELATIONS, SHAPES

FILLER = ("a", "an", "photo", "of", "and")
SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def shapes_words() -> list[str]:
    """Every word a shapes-world prompt uses (fillers, shapes and plurals, colors, numbers, relation words),
    sorted."""
    words = {*FILLER, *SHAPES, *PLURALS.values(), *COLORS, *NUMBER_WORDS.values()}
    words |= {w for rel in RELATIONS for w in rel.split()}
    return sorted(words)


def _bpe_trace(word: str, ranks: dict[tuple[str, str], int]) -> tuple[list[tuple[str, str]], list[str]]:
    """CLIP's BPE on one word: the merges applied, in order, and the final tokens."""
    parts = [*word[:-1], word[-1] + "</w>"]
    used = []
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        used.append(best)
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return used, parts


def shapes_tokenizer(max_length: int = 77):
    """A CLIPTokenizer with CLIP's BPE merges that the shapes words use, a vocabulary of a few hundred tokens
    (module docstring), and a window of `max_length` tokens."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    ranks = SimpleTokenizer().bpe_ranks
    merges: set[tuple[str, str]] = set()
    for word in shapes_words():
        merges.update(_bpe_trace(word, ranks)[0])
    ordered = sorted(merges, key=ranks.__getitem__)
    chars = [c for c in string.ascii_lowercase + string.digits]
    tokens = [*chars, *(c + "</w>" for c in chars), *dict.fromkeys(a + b for a, b in ordered)]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*tokens, *SPECIALS]))}
    return CLIPTokenizer(vocab=vocab, merges=ordered, model_max_length=max_length)
