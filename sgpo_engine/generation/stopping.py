"""When a sequence stops: EOS or stop token ids, stop strings, or its length cap."""
from __future__ import annotations

from typing import Iterable, Optional


class StopRule:
    """Per-rollout stopping rule.

    stop_ids: token ids that end a sequence (EOS included); the token is kept
    in token_ids (the model must learn to emit it) but not in the text.
    stop_strings: a sequence ends as soon as its text contains one; the text
    is cut before it (as vLLM does), token_ids keep the token that completed it.
    """

    def __init__(self, stop_ids: Iterable[int], stop_strings: Optional[Iterable[str]], tokenizer):
        self.stop_ids = frozenset(int(t) for t in stop_ids)
        self.stop_strings = [s for s in (stop_strings or []) if s]
        if self.stop_strings and tokenizer is None:
            raise ValueError("stop: stop strings need a tokenizer to decode text; pass stop token ids instead")
        self.tokenizer = tokenizer
        # A stop string of n characters is inside the text of the last n + 4
        # tokens (every token decodes to >= 1 character, but byte-level tokens
        # can split one character across up to 4 tokens).
        self.window = max((len(s) for s in self.stop_strings), default=0) + 4

    def hit(self, token_ids: list[int]) -> bool:
        if token_ids[-1] in self.stop_ids:
            return True
        if self.stop_strings:
            tail = self.tokenizer.decode(token_ids[-self.window:], skip_special_tokens=False)
            return any(s in tail for s in self.stop_strings)
        return False

    def cut(self, text: str) -> str:
        """The text before the first stop string."""
        ends = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        return text[:min(ends)] if ends else text
