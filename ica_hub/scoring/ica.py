"""The ICA scorer: how much k holdout demonstrations in the prompt raise a response's likelihood.

    ica_score = log p(y | C, x) - log p(y | x)         (summed over response tokens)

For preference rows the score is the change in the chosen-over-rejected margin:

    ica_score = [log p(y_w | C, x) - log p(y_l | C, x)] - [log p(y_w | x) - log p(y_l | x)]

``baseline="pool"`` gives the contrastive variant: the subtracted pass has k demonstrations too,
the nearest rows of a reference pool instead of the holdout, so the generic effect of "more
context" cancels and what remains is the holdout-specific effect:

    ica_score = log p(y | C_holdout, x) - log p(y | C_pool, x)

Columns added (``ica`` is the default ``column_prefix``):

| column                      | meaning                                                       |
|-----------------------------|---------------------------------------------------------------|
| ``ica_score``               | the score above, summed over response tokens                  |
| ``ica_score_per_token``     | the same with each log-prob sum divided by its token count    |
| ``ica_logp_base``           | log p(y | x) (preference: the chosen-minus-rejected margin)   |
| ``ica_logp_context``        | log p(y | C, x) (preference: the margin)                      |
| ``ica_logp_baseline``       | contrastive only: log p(y | C_pool, x)                        |
| ``ica_num_response_tokens`` | response tokens scored (preference: chosen + rejected)        |
| ``ica_demonstrations``      | holdout row indices used as demonstrations, in prompt order   |
| ``ica_flag``                | null, or why the row was not scored exactly as asked          |
| ``ica_logp_end``            | ``score_ending=True``, SFT rows: log p(end of turn | C, x, y), |
|                             | how likely the model finds the response complete              |

Preference rows also get ``ica_logp_{base,context}_{chosen,rejected}`` and
``ica_num_tokens_{chosen,rejected}``. A flagged row may still have a score (fewer
demonstrations, a truncated prompt); a row with a null score always has a flag.

Limits: the whole prompt must fit in ``max_length`` with the response. Demonstrations shrink
first (fewer, then truncated), then the row's question; the response is never cut.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch

from ica_hub.context.layouts import LAYOUTS, Demonstration, Layout, render_segments
from ica_hub.context.retrieval import DemonstrationIndex
from ica_hub.data.chat import ChatRenderer
from ica_hub.data.formats import RowFormat, detect_format, parse_row, RowProblem
from ica_hub.models import EMBEDDED_EMBEDDER, EMBEDDED_MODEL
from ica_hub.scoring import base
from ica_hub.scoring.engine import ScoringItem

logger = logging.getLogger(__name__)

Selection = Literal["nearest", "fixed"]
Baseline = Literal["none", "pool"]
DemonstrationOrder = Literal["index", "similarity"]


def _parse_all(rows, what: str) -> tuple[RowFormat, list]:
    rows = list(rows)
    if not rows:
        raise ValueError(f"The {what} is empty: give at least k rows.")
    fmt = detect_format(list(rows[0].keys()))
    parsed, problems = [], []
    for i, row in enumerate(rows):
        result = parse_row(row, fmt)
        if isinstance(result, RowProblem):
            problems.append(f"row {i}: {result.reason}")
        else:
            parsed.append(result)
    if problems:
        raise ValueError(f"The {what} has rows that cannot be used:\n  "
                         + "\n  ".join(problems[:20]))
    return fmt, parsed


class ICAScorer:
    """ICA scores for ``dataset.map(scorer, batched=True)``. See the module docstring."""

    scorer_name = "ica"
    scorer_version = "v1"

    def __init__(
        self,
        holdout,
        model: Any = EMBEDDED_MODEL,
        tokenizer: Any = None,
        *,
        k: int = 3,
        selection: Selection = "nearest",
        layout: Layout = "single_turn",
        baseline: Baseline = "none",
        baseline_pool=None,
        demonstration_order: DemonstrationOrder = "index",
        fixed_indices: Sequence[int] | None = None,
        max_length: int = 2048,
        max_demonstration_tokens: int = 256,
        embedder: str = EMBEDDED_EMBEDDER,
        max_tokens_per_batch: int = 4096,
        reuse_prefix: bool = True,
        column_prefix: str = "ica",
        score_ending: bool = False,
        device: str | None = None,
        revision: str | None = None,
        dtype: torch.dtype = torch.float32,
        training_step: int | None = None,
        holdout_source: dict[str, str] | None = None,
        _expected_weights_hash: str | None = None,
    ):
        self.settings = dict(
            k=k, selection=selection, layout=layout, baseline=baseline,
            demonstration_order=demonstration_order,
            fixed_indices=list(fixed_indices) if fixed_indices is not None else None,
            max_length=max_length, max_demonstration_tokens=max_demonstration_tokens,
            embedder=embedder, column_prefix=column_prefix, score_ending=score_ending,
        )
        self.runtime = dict(max_tokens_per_batch=max_tokens_per_batch, reuse_prefix=reuse_prefix,
                            device=device, training_step=training_step)
        # Where the holdout came from, for provenance: {"name": repo id or path, "revision": ...}
        self.holdout_source = dict(holdout_source or {})
        self._holdout_rows = [dict(row) for row in holdout]
        self._pool_rows = ([dict(row) for row in baseline_pool]
                           if baseline_pool is not None else None)
        self._validate()
        self.holdout_format, self.holdout = _parse_all(self._holdout_rows, "holdout")
        if len(self.holdout) < k:
            raise ValueError(
                f"The holdout has {len(self.holdout)} rows but k={k}: lower k (scorer.k in a "
                "recipe) or add holdout rows."
            )
        self.pool = _parse_all(self._pool_rows, "baseline_pool")[1] if self._pool_rows else None
        self.handle = base.ModelHandle(model, tokenizer, revision=revision, dtype=dtype,
                                       expected_weights_hash=_expected_weights_hash)
        self.renderer = ChatRenderer(self.handle.get_tokenizer())
        self.holdout_hash = base.content_hash(self.holdout)
        self._holdout_demos = [self._demonstration(row) for row in self.holdout]
        self._pool_demos = [self._demonstration(row) for row in self.pool] if self.pool else None
        self._holdout_index = DemonstrationIndex(self.holdout, embedder)
        self._pool_index = DemonstrationIndex(self.pool, embedder) if self.pool else None
        self._fixed_order = self._fixed_order_of(fixed_indices)
        self._ending = self.renderer.end_of_turn_ids() if score_ending else ()
        self._engine = None

    # -- validation and set-up ------------------------------------------------------------

    def _validate(self) -> None:
        s = self.settings
        problems = []
        if not isinstance(s["k"], int) or s["k"] < 1:
            problems.append(f"k={s['k']!r}: must be an integer >= 1 (the paper's default is 3)")
        for option, value, allowed in (
            ("selection", s["selection"], ("nearest", "fixed")),
            ("layout", s["layout"], LAYOUTS),
            ("baseline", s["baseline"], ("none", "pool")),
            ("demonstration_order", s["demonstration_order"], ("index", "similarity")),
        ):
            if value not in allowed:
                problems.append(f"{option}={value!r}: choose one of {', '.join(allowed)}")
        if s["baseline"] == "pool" and self._pool_rows is None:
            problems.append("baseline='pool' needs baseline_pool= (rows to draw baseline "
                            "demonstrations from, usually the training pool)")
        if s["max_length"] < 16:
            problems.append(f"max_length={s['max_length']}: too small to hold any prompt")
        if s["max_demonstration_tokens"] < 1:
            problems.append("max_demonstration_tokens must be >= 1")
        if not self._holdout_rows:
            problems.append("the holdout is empty: give at least k rows")
        if problems:
            raise ValueError("Invalid ICAScorer settings:\n  " + "\n  ".join(problems))

    def _demonstration(self, row) -> Demonstration:
        # Preference holdouts show their chosen response, as in the paper.
        cap = self.settings["max_demonstration_tokens"]
        return Demonstration(
            self.renderer.truncate(row.question, cap, keep="end"),
            self.renderer.truncate(row.responses[0], cap, keep="start"),
        )

    def _fixed_order_of(self, fixed_indices) -> list[int]:
        n = len(self.holdout)
        if fixed_indices is not None:
            bad = [i for i in fixed_indices if not 0 <= i < n]
            if bad:
                raise ValueError(f"fixed_indices {bad} are outside the holdout's {n} rows.")
            rest = [i for i in range(n) if i not in set(fixed_indices)]
            return list(fixed_indices) + rest
        return list(np.random.default_rng(0).permutation(n))

    @property
    def score_column(self) -> str:
        """The column that holds this scorer's score."""
        return f"{self.settings['column_prefix']}_score"

    @property
    def name(self) -> str:
        variant = "ica-contrastive" if self.settings["baseline"] == "pool" else "ica"
        return f"{variant}/{self.scorer_version}"

    # -- identity, pickling, provenance ----------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Everything that changes a score; ``datasets`` fingerprints ``map`` with it."""
        identity = {"scorer": self.name, **self.handle.identity(), **self.settings,
                    "holdout_hash": self.holdout_hash,
                    "chat_template_hash": self.renderer.template_hash}
        if self.pool is not None:
            identity["baseline_pool_hash"] = base.content_hash(self.pool)
        return identity

    def __reduce__(self):
        name_or_path, revision, expected = self.handle.pickle_args()
        kwargs = dict(self.settings, **self.runtime, model=name_or_path, revision=revision,
                      holdout_source=self.holdout_source,
                      dtype=self.handle.dtype, _expected_weights_hash=expected,
                      baseline_pool=self._pool_rows)
        return (_rebuild, (type(self), self._holdout_rows, kwargs, self.identity()))

    def runtime_options(self) -> dict[str, Any]:
        """The options that do not change a score (speed, device), for rebuilding a copy."""
        return dict(self.runtime, holdout_source=self.holdout_source)

    def provenance(self) -> dict[str, Any]:
        """What a scored version records about how its scores were made."""
        identity = self.identity()
        return base.provenance_record(
            self.name,
            **{key: identity[key] for key in ("model", "model_revision", "model_weights_hash")},
            training_step=self.runtime["training_step"],
            holdout=self.holdout_source.get("name"),
            holdout_revision=self.holdout_source.get("revision"),
            holdout_hash=self.holdout_hash,
            k=self.settings["k"],
            selection=self.settings["selection"],
            layout=self.settings["layout"],
            embedder=self.settings["embedder"],
            chat_template_hash=self.renderer.template_hash,
            settings=self.settings,
        )

    # -- scoring ---------------------------------------------------------------------------

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        return self.score_batch(batch, rank)[0]

    def score_batch(self, batch: dict[str, list], rank: int | None = None, *,
                    base_states: bool = False) -> tuple[dict[str, list], np.ndarray | None]:
        """``(columns, states)``: the score columns of ``batch`` and, with ``base_states``, each
        row's mean final hidden state over its response in the plain pass (``(rows, hidden)``;
        NaN rows for rows that were not scored). SFT rows only for the states."""
        rows = base.prepare_rows(batch)
        self._check_format(rows.fmt)
        columns = self._empty_columns(rows.num_rows, rows.fmt)
        fitted, flags = base.fit_rows(rows, self.renderer, self.settings["max_length"])
        holdout_demos = self._choose(self._holdout_index, [rows.parsed[i] for i in fitted])
        pool_demos = (self._choose(self._pool_index, [rows.parsed[i] for i in fitted], pool=True)
                      if self._pool_index is not None else None)

        plans = {}
        for n, (i, row) in enumerate(fitted.items()):
            plan = self._plan_row(row, holdout_demos[n], pool_demos[n] if pool_demos else None)
            if isinstance(plan, str):
                flags[i] = row.flags + [plan]
            else:
                plans[i] = plan
                flags[i] = row.flags + plan["flags"]

        items = [item for plan in plans.values() for item in plan["items"]]
        if base_states:
            # items per SFT row: base, holdout context, (pool baseline)
            items = [replace(item, keep_state=True) if n == 0 else item
                     for plan in plans.values() for n, item in enumerate(plan["items"])]
        states = None
        if items:
            out = self._get_engine(rank).run(items)
            if base_states:
                states = np.full((rows.num_rows, out.states.shape[1]), np.nan, np.float32)
            offset = 0
            for i, plan in plans.items():
                width = len(plan["items"])
                self._fill_row(columns, i, plan, out.sums[offset:offset + width],
                               out.counts[offset:offset + width], rows.fmt)
                if self._has_ending(rows.fmt):
                    columns[f"{self.settings['column_prefix']}_logp_end"][i] = float(
                        out.endings[offset + 1])
                if states is not None:
                    states[i] = out.states[offset]
                offset += width

        prefix = self.settings["column_prefix"]
        columns[f"{prefix}_flag"] = ["; ".join(flags[i]) if flags.get(i) else None
                                     for i in range(rows.num_rows)]
        return columns, states

    def check_columns(self, column_names: list[str]) -> None:
        """Refuse, before the model loads, a dataset whose format is not the holdout's."""
        self._check_format(detect_format(column_names))

    def _check_format(self, fmt: RowFormat) -> None:
        if fmt.is_preference != self.holdout_format.is_preference:
            kinds = {True: "preference (prompt/chosen/rejected)", False: "SFT (messages or "
                     "prompt/completion)"}
            raise ValueError(
                f"The holdout is {kinds[self.holdout_format.is_preference]} but the rows being "
                f"scored are {kinds[fmt.is_preference]}: give a holdout in the pool's format."
            )

    def _choose(self, index: DemonstrationIndex, rows, pool: bool = False) -> list[list[int]]:
        k = self.settings["k"]
        if self.settings["selection"] == "fixed" and not pool:
            return index.fixed(rows, self._fixed_order, k)
        return index.nearest(rows, k)

    def _order(self, chosen: list[int]) -> list[int]:
        # "index": holdout order, so rows with overlapping neighbours share a prefix the engine
        # encodes once. "similarity": least similar first, the most similar next to the question.
        if self.settings["demonstration_order"] == "index":
            return sorted(chosen)
        return list(reversed(chosen))

    def _segments(self, shown: list[Demonstration], prompt) -> list[tuple[int, ...]]:
        texts = render_segments(self.renderer, self.settings["layout"], shown, prompt)
        return [self.renderer.encode(text) for text in texts]

    def _fit_context(self, demos, chosen, prompt, response_len: int, flags, what):
        """Demonstrations to show with ``prompt``, shrunk until the pass fits ``max_length``.

        Returns ``(shown demonstrations, their indices, prompt)``; the prompt comes back cut
        when even one truncated demonstration does not fit, and is None when nothing fits.
        """
        max_length = self.settings["max_length"]
        chosen = list(chosen)
        overrides: dict[int, Demonstration] = {}
        while True:
            order = self._order(chosen)
            shown = [overrides.get(j, demos[j]) for j in order]
            excess = sum(map(len, self._segments(shown, prompt))) + response_len - max_length
            if excess <= 0:
                return shown, order, prompt
            if len(chosen) > 1:
                flags.append(f"demonstrations_reduced: {what} k {len(chosen)} -> "
                             f"{len(chosen) - 1} to fit max_length")
                chosen = chosen[:-1]  # drop the least similar
                continue
            demo = shown[0] if shown else None
            answer_tokens = len(self.renderer.encode(demo.answer)) if demo else 0
            if demo and answer_tokens > excess + 8:
                cut_answer = self.renderer.truncate(demo.answer, answer_tokens - excess - 2,
                                                    keep="start")
                overrides[chosen[0]] = Demonstration(demo.question, cut_answer)
                flags.append(f"demonstrations_truncated: {what} answer cut to fit max_length")
                continue
            prompt = base.truncate_question(self.renderer, prompt, excess)
            if prompt is None:
                return None, chosen, None
            flags.append(f"prompt_truncated: {excess} question tokens cut beside {what} "
                         "demonstrations")

    def _plan_row(self, row: base.FittedRow, holdout_chosen, pool_chosen):
        """All scoring items of one row, or the reason it cannot be scored.

        Every pass of a row (base, holdout context, pool baseline; chosen and rejected) sees
        the same prompt, cut once for the pass that needed it most.
        """
        flags: list[str] = []
        prompt = row.prompt
        longest = max(map(len, row.responses))
        passes = [("holdout", self._holdout_demos, holdout_chosen)]
        if pool_chosen is not None:
            passes.append(("pool", self._pool_demos, pool_chosen))
        shown_by_pass, holdout_indices = [], []
        for what, demos, chosen in passes:
            shown, used, prompt = self._fit_context(demos, chosen, prompt, longest, flags, what)
            if prompt is None:
                return (f"prompt_too_long: the question does not fit beside even one "
                        f"{what} demonstration in max_length={self.settings['max_length']}")
            shown_by_pass.append(shown)
            if what == "holdout":
                holdout_indices = used
        # Segments depend on the prompt only, not on the response: build them once per pass.
        pass_segments = [self._segments(shown, prompt) for shown in shown_by_pass]
        ending = self._ending if len(row.responses) == 1 else ()
        items = []
        for response in row.responses:
            items.append(base.base_item(self.renderer, prompt, response))
            for n, segments in enumerate(pass_segments):
                items.append(ScoringItem(tuple(segments[:-1]), segments[-1], response,
                                         ending if n == 0 else ()))
        return {"items": items, "demonstrations": holdout_indices, "flags": flags}

    def _get_engine(self, rank):
        if self._engine is None:
            self._engine = base.make_engine(self.handle, rank, self.runtime,
                                            self.runtime["reuse_prefix"])
            self._index_device(self._engine.device)
        return self._engine

    def _index_device(self, device) -> None:
        for index in (self._holdout_index, self._pool_index):
            if index is not None:
                index.device = str(device)

    # -- columns ---------------------------------------------------------------------------

    def _column_names(self, fmt: RowFormat) -> list[str]:
        p = self.settings["column_prefix"]
        names = [f"{p}_score", f"{p}_score_per_token", f"{p}_logp_base", f"{p}_logp_context"]
        if self.settings["baseline"] == "pool":
            names.append(f"{p}_logp_baseline")
        names += [f"{p}_num_response_tokens", f"{p}_demonstrations"]
        if self._has_ending(fmt):
            names.append(f"{p}_logp_end")
        if fmt.is_preference:
            for side in ("chosen", "rejected"):
                names += [f"{p}_logp_base_{side}", f"{p}_logp_context_{side}",
                          f"{p}_num_tokens_{side}"]
        return names

    def _has_ending(self, fmt: RowFormat) -> bool:
        return bool(self._ending) and not fmt.is_preference

    def output_features(self, column_names: Sequence[str]):
        """The ``datasets.Features`` of the columns a call adds, for rows with these columns."""
        from datasets import Features, List, Value

        p = self.settings["column_prefix"]

        def feature(name: str):
            if name == f"{p}_demonstrations":
                return List(Value("int64"))
            if name.startswith(f"{p}_num_"):
                return Value("int64")
            return Value("float64")

        names = self._column_names(detect_format(list(column_names)))
        return Features({**{name: feature(name) for name in names}, f"{p}_flag": Value("string")})

    def features_for(self, dataset) -> Any:
        """The features of ``dataset`` scored: pass as ``dataset.map(..., features=)``.

        ``datasets`` fixes a column's type from the first batch it writes, so a flag column
        that is null all through the first batch cannot take a reason later; naming the
        features up front avoids that.
        """
        from datasets import Features

        return Features({**dataset.features, **self.output_features(dataset.column_names)})

    def _empty_columns(self, num_rows: int, fmt: RowFormat) -> dict[str, list]:
        return {name: [None] * num_rows for name in self._column_names(fmt)}

    def _fill_row(self, columns, i, plan, sums, counts, fmt) -> None:
        p = self.settings["column_prefix"]
        passes = 3 if self.settings["baseline"] == "pool" else 2
        # sums per response: [base, context, (baseline)]
        per_response = [sums[j * passes:(j + 1) * passes] for j in range(len(sums) // passes)]
        tokens = [int(counts[j * passes]) for j in range(len(per_response))]
        reference = 2 if passes == 3 else 0  # what the in-context pass is compared with
        if fmt.is_preference:
            (cb, cc, *cx), (rb, rc, *rx) = per_response
            nc, nr = tokens
            margin = lambda c, r: c - r  # noqa: E731
            columns[f"{p}_logp_base"][i] = margin(cb, rb)
            columns[f"{p}_logp_context"][i] = margin(cc, rc)
            ref_c, ref_r = per_response[0][reference], per_response[1][reference]
            columns[f"{p}_score"][i] = margin(cc, rc) - margin(ref_c, ref_r)
            columns[f"{p}_score_per_token"][i] = (cc / nc - rc / nr) - (ref_c / nc - ref_r / nr)
            if passes == 3:
                columns[f"{p}_logp_baseline"][i] = margin(cx[0], rx[0])
            for side, (b, c, *_), n in (("chosen", per_response[0], nc),
                                        ("rejected", per_response[1], nr)):
                columns[f"{p}_logp_base_{side}"][i] = b
                columns[f"{p}_logp_context_{side}"][i] = c
                columns[f"{p}_num_tokens_{side}"][i] = n
            columns[f"{p}_num_response_tokens"][i] = nc + nr
        else:
            values, n = per_response[0], tokens[0]
            columns[f"{p}_logp_base"][i] = values[0]
            columns[f"{p}_logp_context"][i] = values[1]
            if passes == 3:
                columns[f"{p}_logp_baseline"][i] = values[2]
            columns[f"{p}_score"][i] = values[1] - values[reference]
            columns[f"{p}_score_per_token"][i] = (values[1] - values[reference]) / n
            columns[f"{p}_num_response_tokens"][i] = n
        columns[f"{p}_demonstrations"][i] = [int(j) for j in plan["demonstrations"]]


def _rebuild(cls, holdout_rows, kwargs, identity):
    del identity  # carried only so that the pickle, and so the map fingerprint, includes it
    return cls(holdout_rows, **kwargs)
