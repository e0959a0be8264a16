"""Fitting a prompt into a text encoder's window on purpose: CLIP reads 77 tokens, T5 in SD3 256, and
dense prompts (DPG-Bench) run far past them. `fit_prompt` makes the choice explicit: "truncate" cuts at
the last whole word that fits and counts the prompt as truncated; "chunk" splits into consecutive
word-aligned pieces that each fit, for encoders that embed chunks and concatenate. Either way the
counts land in a `FitReport` (the generate stage writes one per generator): nothing is dropped silently."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

Mode = Literal["truncate", "chunk"]


class Tokenizer(Protocol):
    """What fit_prompt needs of a Hugging Face tokenizer (CLIPTokenizer, T5TokenizerFast, ...)."""

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any:
        """Encode `text`; the result's "input_ids" is the list of token ids."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Token ids back to text."""
        ...

    def num_special_tokens_to_add(self, pair: bool = ...) -> int:
        """Special tokens (BOS, EOS) the encoder adds to one text, counted against its window."""
        ...


@dataclass
class FitReport:
    """What fitting one generator's prompts into one encoder's `max_tokens` window did (counts in prompts and
    content tokens); the generate stage writes it per generator."""

    mode: str
    max_tokens: int
    n_prompts: int = 0
    n_over_limit: int = 0  # prompts longer than the encoder's limit
    n_truncated: int = 0  # of those, cut (truncate mode)
    n_chunked: int = 0  # of those, split (chunk mode)
    tokens_dropped: int = 0  # content tokens lost to truncation, over all prompts
    over_limit_ids: list[int] = field(default_factory=list)  # positions of the long prompts

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class FittedPrompt:
    """One prompt fitted into an encoder's window: the text(s) to encode and its token counts."""

    texts: list[str]  # the one (possibly truncated) text, or the chunks
    n_tokens: int  # content tokens of the whole prompt, special tokens excluded
    budget: int  # content tokens that fit in one encoder pass
    truncated: bool


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Content tokens of `text` under `tokenizer`, special tokens excluded."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _longest_fit(prompt: str, spans: list[tuple[int, int]], tokenizer: Tokenizer, budget: int) -> int:
    """How many of the words `spans` fit in `budget` tokens, as the original text from the first word
    through the k-th. Binary search: a longer prefix never has fewer tokens."""
    lo, hi = 0, len(spans)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(tokenizer, prompt[spans[0][0] : spans[mid - 1][1]]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _token_pieces(word: str, tokenizer: Tokenizer, budget: int) -> list[str]:
    # Only for a single "word" longer than the whole budget (a URL, a run of symbols): cut by tokens.
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[i : i + budget]).strip() for i in range(0, len(ids), budget)]


def fit_prompt(
    prompt: str, tokenizer: Tokenizer, max_tokens: int, mode: Mode = "truncate", report: FitReport | None = None
) -> FittedPrompt:
    """Fit one prompt into an encoder of `max_tokens` tokens (special tokens included, e.g. 77 for CLIP);
    counts what happened in `report` when given."""
    if mode not in ("truncate", "chunk"):
        raise ValueError(f"mode must be 'truncate' or 'chunk', not {mode!r}")
    budget = max_tokens - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room beside the special tokens")
    n_tokens = count_tokens(tokenizer, prompt)
    if report is not None:
        report.n_prompts += 1
    if n_tokens <= budget:
        return FittedPrompt([prompt], n_tokens, budget, False)
    spans = [m.span() for m in re.finditer(r"\S+", prompt)]
    texts: list[str] = []
    i = 0
    while i < len(spans):
        k = _longest_fit(prompt, spans[i:], tokenizer, budget)
        pieces = (
            [prompt[spans[i][0] : spans[i + k - 1][1]]]
            if k
            else _token_pieces(prompt[slice(*spans[i])], tokenizer, budget)
        )
        texts.extend(pieces)
        i += max(k, 1)
        if mode == "truncate":
            texts = texts[:1]
            break
    if report is not None:
        report.n_over_limit += 1
        report.over_limit_ids.append(report.n_prompts - 1)
        if mode == "truncate":
            report.n_truncated += 1
            report.tokens_dropped += n_tokens - count_tokens(tokenizer, texts[0])
        else:
            report.n_chunked += 1
    return FittedPrompt(texts, n_tokens, budget, mode == "truncate")


def fit_prompts(
    prompts: Iterable[str], tokenizer: Tokenizer, max_tokens: int, mode: Mode = "truncate"
) -> tuple[list[FittedPrompt], FitReport]:
    """fit_prompt over many prompts; the report says how many were over the limit and what was done."""
    report = FitReport(mode=mode, max_tokens=max_tokens)
    fitted = [fit_prompt(p, tokenizer, max_tokens, mode, report) for p in prompts]
    if report.n_over_limit:
        log.warning(
            "%d of %d prompts exceed %d tokens: %s",
            report.n_over_limit,
            report.n_prompts,
            max_tokens,
            f"truncated ({report.tokens_dropped} tokens dropped)" if mode == "truncate" else "split into chunks",
        )
    return fitted, report


EXCERPT_CHARS = 200


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` as reports show it: whole up to `limit` characters, else its first `limit` and its length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
