"""Turn a growing list of token ids into text deltas, and cut the text at stop strings.

Decoding token by token splits multi-byte characters (a CJK character or an emoji can span several
byte-level tokens), so text is only released once the decoded tail is no longer an incomplete
character (the approach vLLM and TGI use). Stop strings may straddle deltas, so the longest tail that
could still become a stop string is held back until it is decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

_INCOMPLETE = "\ufffd"


@dataclass
class IncrementalDetokenizer:
    tokenizer: PreTrainedTokenizerBase
    token_ids: list[int] = field(default_factory=list)
    _prefix_offset: int = 0
    _read_offset: int = 0

    def push(self, new_ids: list[int]) -> str:
        """Append tokens; return the newly complete text (possibly empty)."""
        self.token_ids.extend(new_ids)
        prefix = self._text(self.token_ids[self._prefix_offset : self._read_offset])
        full = self._text(self.token_ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(_INCOMPLETE):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)
            return full[len(prefix) :]
        return ""

    def _text(self, ids: list[int]) -> str:
        """`decode` is typed for batches too (a list of strings); one flat list of ids is one string."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)
        return text


@dataclass
class StopStringFilter:
    """Releases text up to (not including) the first stop string; holds back possible stop prefixes."""

    stops: tuple[str, ...]
    _pending: str = ""
    stopped: bool = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        self._pending += text
        if not self.stops:
            out, self._pending = self._pending, ""
            return out
        hits = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        hold = self._longest_stop_prefix_suffix()
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out

    def _longest_stop_prefix_suffix(self) -> int:
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
