"""Response log-probabilities for many sequences, with shared prefixes encoded once.

A :class:`ScoringItem` is ``prefix segments + suffix + response (+ ending)`` as token ids. The
engine returns, per item, the sum of the response tokens' log-probabilities and their count, and,
for items that carry an ``ending`` (the tokens a chat template puts after a finished response),
the ending's log-probability: how likely the model finds it that the response is complete. Items
marked ``keep_state`` also get the mean of the model's final hidden states over the positions
that predict their response: the model's own summary of the response, read off the same pass.

Speed comes from two things:

- **Prefix reuse.** Items are arranged in a trie keyed by their prefix segments (a layout's
  lead and demonstrations). Each trie node is run through the model once, its key/value cache
  extended from its parent's; the items under a node then run only their suffix and response
  on top of that cache. In fixed mode every row shares one path; in nearest mode rows share the
  runs of demonstrations they have in common. A node shared by fewer than ``min_shared_items``
  items is not cached: its items run in full inside the parent's batches.
- **Length-sorted batches under a token budget**, right-padded. Right padding needs no
  attention mask: causal attention already keeps real tokens from seeing the pads after them,
  and positions of real tokens are exactly those of the unpadded sequence.

Only hidden states at response positions go through the output layer, in chunks, so memory is
bounded by model + batch + a chunk of ``vocab`` logits, never by dataset size.

With ``reuse_prefix=False`` every item runs in full: the naive method, kept for comparison and
for tests (the two agree within float tolerance).

Limitation: the decoder is called directly (``model.get_decoder()``) and the output layer applied
after, so models whose logits get extra processing in ``forward`` (final logit soft-capping)
are scored without it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

# Rows of logits materialised at once: 512 x 49k vocab x 4 bytes = 100 MB.
_LOGIT_CHUNK = 512


@dataclass(frozen=True)
class ScoringItem:
    prefix: tuple[tuple[int, ...], ...]  # segments that other items may share
    suffix: tuple[int, ...]  # the rest of the prompt; never empty
    response: tuple[int, ...]
    ending: tuple[int, ...] = ()  # scored apart from the response; empty: not scored
    keep_state: bool = False  # also return the mean final hidden state over the response

    @property
    def num_tokens(self) -> int:
        return (sum(map(len, self.prefix)) + len(self.suffix) + len(self.response)
                + len(self.ending))


@dataclass
class _Node:
    children: dict[tuple[int, ...], _Node] = field(default_factory=dict)
    items: list[int] = field(default_factory=list)  # items whose prefix ends here
    count: int = 0  # items in this subtree

    def subtree_items(self) -> list[int]:
        out = list(self.items)
        for child in self.children.values():
            out += child.subtree_items()
        return out


@dataclass
class EngineOutput:
    """Per item, in item order: ``sums`` of response log-probs (float64), ``counts`` of response
    tokens, ``endings`` (the ending's log-prob; NaN without one) and ``states`` (``(items,
    hidden)`` float32: the mean final hidden state over the positions that predict the
    response; NaN rows for items without ``keep_state``)."""

    sums: np.ndarray
    counts: np.ndarray
    endings: np.ndarray
    states: np.ndarray


class LogProbEngine:
    """Sums of response-token log-probabilities under a causal LM, without gradients.

    ``min_shared_items``: a trie node is cached only when at least this many items share it;
    rarer prefixes run in full inside their parent's batches. 2 (the default) caches every
    prefix two items share: on a CPU, where time follows tokens, that ran 8% faster than 4 in
    nearest mode (benchmarks/RESULTS.md); raise it where many tiny batches cost more than the
    tokens they save.
    """

    def __init__(
        self,
        model,
        *,
        max_tokens_per_batch: int = 4096,
        reuse_prefix: bool = True,
        min_shared_items: int = 2,
    ):
        self.model = model
        self.max_tokens_per_batch = max_tokens_per_batch
        self.reuse_prefix = reuse_prefix
        self.min_shared_items = min_shared_items
        self.decoder = model.get_decoder()
        self.output_layer = model.get_output_embeddings()
        self.forward_tokens = 0  # tokens run through the model, for benchmarks

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def response_logps(self, items: Sequence[ScoringItem]) -> tuple[np.ndarray, np.ndarray]:
        """``(sum_logps, num_tokens)`` per item, in item order (float64, int64)."""
        out = self.run(items)
        return out.sums, out.counts

    def response_and_ending_logps(
        self, items: Sequence[ScoringItem]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sum_logps, num_tokens, ending_logps)`` per item, in item order; the ending's
        log-probability is NaN for items without an ``ending``."""
        out = self.run(items)
        return out.sums, out.counts, out.endings

    @torch.inference_mode()
    def run(self, items: Sequence[ScoringItem]) -> EngineOutput:
        """Everything the engine computes for ``items``: see :class:`EngineOutput`."""
        # sums[:, 0]: response tokens; sums[:, 1]: ending tokens
        sums = np.zeros((len(items), 2), dtype=np.float64)
        counts = np.array([len(item.response) for item in items], dtype=np.int64)
        endings = np.array([np.nan if not item.ending else 0.0 for item in items])
        hidden_size = self.output_layer.weight.shape[1]
        states = np.full((len(items), hidden_size), np.nan, dtype=np.float32)
        out = (sums, states)
        if items:
            segments = [[segment for segment in item.prefix if segment] for item in items]
            if self.reuse_prefix:
                self._visit(self._trie(segments), 0, None, items, segments, out)
            else:
                self._run_group(items, segments, [(i, 0) for i in range(len(items))], None, out)
        return EngineOutput(sums[:, 0].copy(), counts, endings + sums[:, 1], states)

    @staticmethod
    def _trie(segments: list[list[tuple[int, ...]]]) -> _Node:

        root = _Node()
        for index, item_segments in enumerate(segments):
            node = root
            node.count += 1
            for segment in item_segments:
                node = node.children.setdefault(segment, _Node())
                node.count += 1
            node.items.append(index)
        return root

    def _visit(self, node: _Node, depth: int, cache, items, segments, out) -> None:
        # Depth first: one cache per level of the current path is alive at any time.
        # group: (item, depth) pairs; the item runs its segments from `depth` on, then suffix.
        group = [(index, depth) for index in node.items]
        for segment, child in node.children.items():
            if child.count >= self.min_shared_items:
                child_cache = self._extend(cache, segment)
                self._visit(child, depth + 1, child_cache, items, segments, out)
                del child_cache
            else:
                group += [(index, depth) for index in child.subtree_items()]
        if group:
            self._run_group(items, segments, group, cache, out)

    def _fork(self, cache, batch_size: int = 1):
        """A cache holding ``cache``'s keys and values, ``batch_size`` times, for a forward
        pass to extend. The parent is never modified: plain dynamic layers grow by
        concatenation into new tensors, so the fork shares the parent's tensors as
        broadcast views and the one unavoidable copy happens inside that concatenation."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        fork = DynamicCache(config=self.model.config)
        if cache is None:
            return fork
        plain = all(type(layer) is DynamicLayer for layer in cache.layers)
        if not plain or len(fork.layers) != len(cache.layers):
            fork = copy.deepcopy(cache)  # other layer kinds may update in place
            if batch_size > 1:
                fork.batch_repeat_interleave(batch_size)
            return fork
        for source, target in zip(cache.layers, fork.layers):
            if not source.is_initialized:
                continue
            target.lazy_initialization(source.keys, source.values)
            target.keys = source.keys.expand(batch_size, -1, -1, -1)
            target.values = source.values.expand(batch_size, -1, -1, -1)
        return fork

    def _extend(self, cache, segment: tuple[int, ...]):
        extended = self._fork(cache)
        input_ids = torch.tensor([segment], device=self.device)
        self.decoder(input_ids=input_ids, cache=extended, use_cache=True)
        self.forward_tokens += len(segment)
        return extended

    def _run_group(self, items, segments, group, cache, out) -> None:
        """Score items on top of one cached prefix, in length-sorted token-budget batches."""
        prefix_len = cache.get_seq_length() if cache is not None else 0
        heads = {index: sum(segments[index][depth:], ()) + items[index].suffix
                 for index, depth in group}
        tails = {index: items[index].response + items[index].ending for index in heads}
        order = sorted(heads, key=lambda i: len(heads[i]) + len(tails[i]))
        batch: list[int] = []
        for index in order:
            length = len(heads[index]) + len(tails[index])
            # Sorted ascending, so the newest item is the longest: padded size = count x length.
            if batch and (len(batch) + 1) * (length + prefix_len) > self.max_tokens_per_batch:
                self._run_batch(items, heads, batch, cache, out)
                batch = []
            batch.append(index)
        if batch:
            self._run_batch(items, heads, batch, cache, out)

    def _run_batch(self, items, heads, batch: list[int], cache, out) -> None:
        sums, states = out  # filled in place
        sequences = [heads[i] + items[i].response + items[i].ending for i in batch]
        width = max(map(len, sequences))
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)  # pads: any id, unseen
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
        input_ids = input_ids.to(self.device)

        batch_cache = self._fork(cache, len(batch)) if cache is not None else None
        hidden = self.decoder(
            input_ids=input_ids, cache=batch_cache, use_cache=batch_cache is not None
        ).last_hidden_state  # (batch, width, hidden)
        self.forward_tokens += sum(map(len, sequences))

        # The hidden state at position p predicts token p + 1: response token j of a row is
        # predicted at position len(head) - 1 + j, and the ending follows the response.
        rows, positions, targets, owners, parts = [], [], [], [], []
        for row, index in enumerate(batch):
            start = len(heads[index]) - 1
            scored = items[index].response + items[index].ending
            rows += [row] * len(scored)
            positions += range(start, start + len(scored))
            targets += scored
            owners += [index] * len(scored)
            parts += [0] * len(items[index].response) + [1] * len(items[index].ending)
        selected = hidden[torch.tensor(rows), torch.tensor(positions)]  # (tokens, hidden)
        for row, index in enumerate(batch):
            if items[index].keep_state:
                start = len(heads[index]) - 1
                response = hidden[row, start : start + len(items[index].response)]
                states[index] = response.float().mean(0).cpu().numpy()
        token_logps = self._token_logps(selected, torch.tensor(targets, device=self.device))
        np.add.at(sums, (np.array(owners), np.array(parts)), token_logps.double().cpu().numpy())

    def _token_logps(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, hidden.shape[0], _LOGIT_CHUNK):
            logits = self.output_layer(hidden[start : start + _LOGIT_CHUNK]).float()
            logps = torch.log_softmax(logits, dim=-1)
            out.append(logps.gather(1, targets[start : start + _LOGIT_CHUNK, None]).squeeze(1))
        return torch.cat(out)
