"""The scorers ICA is judged against, with the same ``dataset.map`` interface.

- :class:`LikelihoodScorer` (``loglik/v1``): the response's log-likelihood under the model,
  with no holdout at all. ``loglik_score`` is the mean per response token (higher: the model
  finds the response more plausible). Preference rows: the chosen-minus-rejected margin of the
  per-token means.
- :class:`RhoLossScorer` (``rho-loss/v1``): RHO-LOSS's reducible holdout loss,
  ``loss(current model) - loss(reference model)`` = ``log p_ref(y|x) - log p(y|x)``, where the
  reference model was trained on the holdout. Preference rows: the change of the margin.

Both add ``<prefix>_score``, ``<prefix>_score_per_token``, ``<prefix>_num_response_tokens`` and
``<prefix>_flag`` columns; see each class for its log-prob columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ica_hub.data.chat import ChatRenderer
from ica_hub.models import EMBEDDED_MODEL
from ica_hub.scoring import base


class _SinglePassScorer:
    """Scores from base passes only (no demonstrations), under one or two models."""

    scorer_name = ""
    scorer_version = "v1"

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int, column_prefix: str,
                 max_tokens_per_batch: int, device: str | None, dtype: torch.dtype,
                 revision: str | None, _expected_weights_hash: str | None = None):
        self.handle = base.ModelHandle(model, tokenizer, revision=revision, dtype=dtype,
                                       expected_weights_hash=_expected_weights_hash)
        self.renderer = ChatRenderer(self.handle.get_tokenizer())
        self.settings = dict(max_length=max_length, column_prefix=column_prefix)
        self.runtime = dict(max_tokens_per_batch=max_tokens_per_batch, device=device)
        self._engines: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return f"{self.scorer_name}/{self.scorer_version}"

    def identity(self) -> dict[str, Any]:
        return {"scorer": self.name, **self.handle.identity(), **self.settings,
                "chat_template_hash": self.renderer.template_hash}

    def provenance(self) -> dict[str, Any]:
        identity = self.identity()
        keep = ("model", "model_revision", "model_weights_hash", "chat_template_hash")
        return base.provenance_record(self.name, **{key: identity[key] for key in keep},
                                      settings=self.settings)

    def _engine(self, handle: base.ModelHandle, rank):
        key = id(handle)
        if key not in self._engines:
            self._engines[key] = base.make_engine(handle, rank, self.runtime)
        return self._engines[key]

    def _logps(self, batch, handles, rank):
        """Per model handle, per row: list of (sum, count) per response; plus flags."""
        rows = base.prepare_rows(batch)
        fitted, flags = base.fit_rows(rows, self.renderer, self.settings["max_length"])
        items = [base.base_item(self.renderer, row.prompt, response)
                 for row in fitted.values() for response in row.responses]
        per_handle = []
        for handle in handles:
            sums, counts = self._engine(handle, rank).response_logps(items)
            out, offset = {}, 0
            for i, row in fitted.items():
                width = len(row.responses)
                out[i] = list(zip(sums[offset:offset + width], counts[offset:offset + width]))
                offset += width
            per_handle.append(out)
        flag_column = ["; ".join(flags[i]) if flags.get(i) else None for i in range(rows.num_rows)]
        return rows, per_handle, flag_column


def _value(pairs, per_token: bool) -> float:
    """One number per row: the sum (or per-token mean); preference: chosen minus rejected."""
    values = [s / n if per_token else s for s, n in pairs]
    return values[0] - values[1] if len(values) == 2 else values[0]


class LikelihoodScorer(_SinglePassScorer):
    """Plain log-likelihood of the response: ``loglik_score`` is the per-token mean.

    Columns: ``loglik_score`` (mean log-prob per response token), ``loglik_logp`` (the sum),
    ``loglik_num_response_tokens``, ``loglik_flag``.
    """

    scorer_name = "loglik"

    def __init__(self, model: Any = EMBEDDED_MODEL, tokenizer: Any = None, *,
                 max_length: int = 2048, column_prefix: str = "loglik",
                 max_tokens_per_batch: int = 4096, device: str | None = None,
                 dtype: torch.dtype = torch.float32, revision: str | None = None,
                 _expected_weights_hash: str | None = None):
        super().__init__(model, tokenizer, max_length=max_length, column_prefix=column_prefix,
                         max_tokens_per_batch=max_tokens_per_batch, device=device, dtype=dtype,
                         revision=revision, _expected_weights_hash=_expected_weights_hash)

    def __reduce__(self):
        name_or_path, revision, expected = self.handle.pickle_args()
        kwargs = dict(self.settings, **self.runtime, revision=revision, dtype=self.handle.dtype,
                      _expected_weights_hash=expected)
        return (_rebuild, (type(self), (name_or_path,), kwargs, self.identity()))

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        rows, (logps,), flags = self._logps(batch, [self.handle], rank)
        p = self.settings["column_prefix"]
        columns = {f"{p}_score": [], f"{p}_logp": [], f"{p}_num_response_tokens": []}
        for i in range(rows.num_rows):
            pairs = logps.get(i)
            columns[f"{p}_score"].append(_value(pairs, per_token=True) if pairs else None)
            columns[f"{p}_logp"].append(_value(pairs, per_token=False) if pairs else None)
            columns[f"{p}_num_response_tokens"].append(
                int(sum(n for _, n in pairs)) if pairs else None)
        columns[f"{p}_flag"] = flags
        return columns


class RhoLossScorer(_SinglePassScorer):
    """RHO-LOSS: ``rho_score = log p_ref(y|x) - log p(y|x)`` (summed over response tokens).

    Columns: ``rho_score``, ``rho_score_per_token``, ``rho_logp_model``, ``rho_logp_reference``,
    ``rho_num_response_tokens``, ``rho_flag``. The reference model must share the tokenizer.
    """

    scorer_name = "rho-loss"

    def __init__(self, reference_model: Any, model: Any = EMBEDDED_MODEL, tokenizer: Any = None,
                 *, max_length: int = 2048, column_prefix: str = "rho",
                 max_tokens_per_batch: int = 4096, device: str | None = None,
                 dtype: torch.dtype = torch.float32, revision: str | None = None,
                 reference_revision: str | None = None,
                 _expected_weights_hash: str | None = None,
                 _expected_reference_hash: str | None = None):
        super().__init__(model, tokenizer, max_length=max_length, column_prefix=column_prefix,
                         max_tokens_per_batch=max_tokens_per_batch, device=device, dtype=dtype,
                         revision=revision, _expected_weights_hash=_expected_weights_hash)
        self.reference = base.ModelHandle(reference_model, self.renderer.tokenizer,
                                          revision=reference_revision, dtype=dtype,
                                          expected_weights_hash=_expected_reference_hash)

    def identity(self) -> dict[str, Any]:
        reference = self.reference.identity()
        return {**super().identity(), "reference_model": reference["model"],
                "reference_weights_hash": reference["model_weights_hash"]}

    def __reduce__(self):
        name_or_path, revision, expected = self.handle.pickle_args()
        reference, reference_revision, expected_reference = self.reference.pickle_args()
        kwargs = dict(self.settings, **self.runtime, revision=revision, dtype=self.handle.dtype,
                      reference_revision=reference_revision, _expected_weights_hash=expected,
                      _expected_reference_hash=expected_reference)
        return (_rebuild, (type(self), (reference, name_or_path), kwargs, self.identity()))

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        rows, (model_logps, ref_logps), flags = self._logps(batch, [self.handle, self.reference],
                                                             rank)
        p = self.settings["column_prefix"]
        names = ("score", "score_per_token", "logp_model", "logp_reference", "num_response_tokens")
        columns = {f"{p}_{name}": [None] * rows.num_rows for name in names}
        for i, pairs in model_logps.items():
            ref_pairs = ref_logps[i]
            columns[f"{p}_logp_model"][i] = _value(pairs, False)
            columns[f"{p}_logp_reference"][i] = _value(ref_pairs, False)
            columns[f"{p}_score"][i] = _value(ref_pairs, False) - _value(pairs, False)
            columns[f"{p}_score_per_token"][i] = _value(ref_pairs, True) - _value(pairs, True)
            columns[f"{p}_num_response_tokens"][i] = int(np.sum([n for _, n in pairs]))
        columns[f"{p}_flag"] = flags
        return columns


def _rebuild(cls, args, kwargs, identity):
    del identity  # in the pickle only so that the map fingerprint covers it
    return cls(*args, **kwargs)
