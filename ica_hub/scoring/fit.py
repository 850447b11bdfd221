"""The holdout-fit scorer (``ica-fit/v3``): the toolkit's default score for SFT rows.

Why not the published ICA score alone: on the embedded 135M model, ``log p(y|C,x) - log p(y|x)``
measures mostly a generic effect of *any* demonstrations, not the holdout's. Demonstrations drawn
from the training pool instead of the holdout raise a swapped answer's likelihood just as much,
so the published score ranks answers to other questions highest (benchmarks/RESULTS.md, "Method
quality"). What the ICA passes do measure well is how likely a response is once the holdout is
in the context, and, read off the plain pass, how the model itself represents the response.
``ica-fit`` combines four such signals, each in units of the holdout's own spread,
``z_j = (signal_j - holdout mean_j) / holdout std_j``. One says whether the row is on target:

- ``fit_holdout_similarity``: mean cosine similarity of the row's *response state* to those of
  its k most similar holdout rows. The response state is the scoring model's mean final hidden
  state over the positions that predict the response, in the plain pass ``p(y | x)`` that the
  ICA score already runs: the model's own summary of what it is reading (code or prose, which
  language, what kind of answer), at no extra forward pass.

Three say whether the row is clean, each catching a different kind of noise:

- ``fit_incontext_loglik``: ``log p(y | C, x) / |y|``, the ICA in-context pass per response token
  (garbled or corrupted text is unlikely even with the holdout in view);
- ``fit_qa_agreement``: cosine similarity of the question's and the answer's sentence embeddings
  (an answer to another question agrees poorly with its question);
- ``fit_end_of_turn``: ``log p(end of turn | C, x, y)``, read off the same in-context pass (a
  response cut off mid-sentence is one the model does not expect to end there).

    fit_score = domain_weight * z_similarity + sum_q min(z_q, 0)

The cleanliness checks are one-sided: a row as clean as the typical holdout row loses nothing,
and being cleaner than the holdout earns nothing, so on clean rows the ranking is the domain
term's; a row that fails any check is pushed down by how far it falls short. ``domain_weight``
(default 2) trades "on target" against "clean": 0 ranks by cleanliness alone, which is what to
use when off-target rows are welcome and only noise should go down (with the default, a clean
off-target row ranks below a slightly noisy on-target one). The form and the default were chosen
on the method-quality benchmark (benchmarks/RESULTS.md), where each signal alone and the earlier
forms are reported beside it: ``v1``, an unweighted mean of three z-scores without the end of
turn; ``v2``, this form with the similarity of sentence embeddings (all-MiniLM-L6-v2) of
question and answer, which reads topic more than kind and reached a domain AUROC of 0.89 where
the response state reaches 0.97.

The holdout statistics come from scoring the holdout rows themselves, each with the others as
demonstrations (a row never sees itself, nor counts as its own neighbour), once, on the first
call. 0 means "as typical as the average holdout row"; negative, less. Every ``ica_*`` column of
:class:`ICAScorer` is kept, so the published score stays available beside it.

SFT rows only: score preference pairs with :class:`ICAScorer` (the margin change).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ica_hub.data.formats import detect_format
from ica_hub.models import EMBEDDED_EMBEDDER, EMBEDDED_MODEL
from ica_hub.scoring import base
from ica_hub.scoring.ica import ICAScorer, _parse_all

logger = logging.getLogger(__name__)

DOMAIN_SIGNAL = "holdout_similarity"
CLEAN_SIGNALS = ("incontext_loglik", "qa_agreement", "end_of_turn")
SIGNALS = (DOMAIN_SIGNAL, *CLEAN_SIGNALS)
_MIN_STD = 1e-6
_PAIRS_REFUSED = ("ica-fit scores SFT rows; these are preference pairs. Score pairs against a "
                  "holdout of pairs (prompt, chosen, rejected) with ICAScorer, whose score is "
                  "the change of the chosen-over-rejected margin (a recipe with scorer.name = "
                  "ica-fit and a holdout of pairs does so by itself)")


def domain_weight_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a ``domain_weight``, or None."""
    if isinstance(value, (int, float)) and np.isfinite(value) and value >= 0:
        return None
    return "must be a finite number >= 0 (0 ranks by cleanliness alone; the default is 2)"


class HoldoutFitScorer:
    """``ica-fit/v3`` scores for ``dataset.map(scorer, batched=True)``; see the module docstring.

    Takes every option of :class:`ICAScorer` (``k``, ``layout``, ``max_length``, ...), which it
    runs for the in-context pass. Columns: those of ``ICAScorer`` (prefix ``ica``), plus
    ``fit_score`` and one ``fit_<signal>`` column per signal (raw, before standardising). A row
    the ICA scorer could not score gets a null ``fit_score``; ``ica_flag`` says why.
    """

    scorer_name = "ica-fit"
    scorer_version = "v3"
    score_column = "fit_score"

    def __init__(self, holdout, model: Any = EMBEDDED_MODEL, tokenizer: Any = None, *,
                 k: int = 3, embedder: str = EMBEDDED_EMBEDDER, domain_weight: float = 2.0,
                 **ica_options):
        if ica_options.get("baseline", "none") != "none":
            raise ValueError("ica-fit uses the holdout pass only: leave baseline='none'")
        if problem := domain_weight_problem(domain_weight):
            raise ValueError(f"domain_weight={domain_weight!r}: {problem}")
        ica_options.pop("score_ending", None)  # always on: the end-of-turn signal needs it
        self._holdout_rows = [dict(row) for row in holdout]
        self._options = dict(ica_options, k=k, embedder=embedder, domain_weight=domain_weight)
        # The holdout's problems first: before the tokenizer or the model is fetched.
        holdout_format, parsed = _parse_all(self._holdout_rows, "holdout")
        if holdout_format.is_preference:
            raise ValueError("ica-fit scores SFT rows (messages or prompt/completion); score "
                             "preference pairs with ICAScorer, whose score is the margin change")
        if len(parsed) < k + 1:
            raise ValueError(f"ica-fit needs at least k + 1 = {k + 1} holdout rows (each holdout "
                             f"row is scored with k others to calibrate); it has "
                             f"{len(parsed)}: add holdout rows or lower k (scorer.k in a "
                             "recipe)")
        self.ica = ICAScorer(self._holdout_rows, model, tokenizer, k=k, embedder=embedder,
                             column_prefix="ica", score_ending=True, **ica_options)
        if not self.ica.renderer.end_of_turn_ids():
            raise ValueError("ica-fit reads the end-of-turn log-prob, but this tokenizer has no "
                             "chat template ending and no EOS token; use ICAScorer instead")
        self._embedder = None
        self._holdout_states: np.ndarray | None = None  # (holdout rows, hidden), plain pass
        self._stats: dict[str, tuple[float, float]] | None = None

    @property
    def name(self) -> str:
        return f"{self.scorer_name}/{self.scorer_version}"

    def identity(self) -> dict[str, Any]:
        return {**self.ica.identity(), "scorer": self.name, "ica_scorer": self.ica.name,
                "domain_weight": float(self._options["domain_weight"])}

    def provenance(self) -> dict[str, Any]:
        record = self.ica.provenance()
        record["scorer"] = self.name
        settings = record.setdefault("settings", {})
        settings["signals"] = list(SIGNALS)
        settings["domain_weight"] = float(self._options["domain_weight"])
        return record

    def __reduce__(self):
        name_or_path, revision, expected = self.ica.handle.pickle_args()
        kwargs = dict(self._options, **self.ica.runtime_options(), model=name_or_path,
                      revision=revision, dtype=self.ica.handle.dtype,
                      _expected_weights_hash=expected)
        return (_rebuild, (type(self), self._holdout_rows, kwargs, self.identity()))

    # -- signals ---------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from ica_hub.models import load_embedder

            self._embedder = load_embedder(self._options["embedder"])
        return self._embedder.encode(texts, batch_size=64, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)

    def _agreement(self, questions: list[str], answers: list[str]) -> np.ndarray:
        """Cosine similarity of each question's embedding to its answer's."""
        return (self._embed(questions) * self._embed(answers)).sum(axis=1)

    def _similarity(self, states: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Mean cosine similarity of each row's response state to its k most similar holdout
        rows' (NaN where the row has no state). ``exclude_self``: ``states`` are the holdout's
        own, and a row is not its own neighbour."""
        similarity = _unit(states) @ _unit(self._holdout_states).T
        if exclude_self:
            np.fill_diagonal(similarity, -np.inf)
        usable = int(np.isfinite(self._holdout_states).all(axis=1).sum())
        k = min(self._options["k"], usable - int(exclude_self))
        # Descending; NaN (holdout rows without a state) sorts last, so never among the k.
        nearest = -np.sort(-similarity, axis=1)[:, :k]
        return nearest.mean(axis=1)

    def _calibrate(self, rank) -> None:
        """Holdout means and spreads of each signal, from the holdout scored leave-one-out."""
        holdout = self.ica.holdout
        logger.info("ica-fit: scoring the %d holdout rows once, each with %d others as "
                    "demonstrations, to put its signals in holdout units", len(holdout),
                    self._options["k"])
        batch = {key: [row[key] for row in self._holdout_rows] for key in self._holdout_rows[0]}
        scored, states = self.ica.score_batch(batch, rank, base_states=True)
        if states is None or np.isfinite(states).all(axis=1).sum() < 2:
            raise ValueError("ica-fit: fewer than 2 holdout rows could be scored; check the "
                             "holdout's flags (ica_flag) and max_length")
        self._holdout_states = states
        agreement = self._agreement([row.question for row in holdout],
                                    [row.responses[0] for row in holdout])
        signals = {"incontext_loglik": _per_token(scored),
                   "holdout_similarity": self._similarity(states, exclude_self=True),
                   "qa_agreement": agreement, "end_of_turn": _values(scored["ica_logp_end"])}
        self._stats = {}
        for name, values in signals.items():
            values = np.asarray(values, dtype=float)
            values = values[np.isfinite(values)]
            if len(values) < 2:
                raise ValueError(f"ica-fit: fewer than 2 holdout rows could be scored for "
                                 f"{name}; check the holdout's flags (ica_flag) and max_length")
            self._stats[name] = (float(values.mean()), max(float(values.std()), _MIN_STD))
        logger.info("ica-fit holdout statistics (mean, std): %s",
                    {name: tuple(round(v, 4) for v in s) for name, s in self._stats.items()})

    def holdout_statistics(self, rank: int | None = None) -> dict[str, tuple[float, float]]:
        """``{signal: (holdout mean, holdout std)}``, the units of the z-scores; runs the holdout
        pass first if no row has been scored yet. With them and a scored dataset's ``fit_*``
        columns, :meth:`combine` gives the score at another ``domain_weight`` without rescoring.
        """
        if self._stats is None:
            self._calibrate(rank)
        return dict(self._stats)

    def combine(self, values: dict[str, float | None],
                domain_weight: float | None = None) -> float | None:
        """``domain_weight * z_similarity + sum_q min(z_q, 0)`` of one row's raw signals (keys:
        ``SIGNALS``); None if a signal is missing. ``domain_weight`` defaults to the scorer's."""
        if any(v is None or not np.isfinite(v) for v in values.values()):
            return None
        stats = self.holdout_statistics()
        weight = self._options["domain_weight"] if domain_weight is None else domain_weight
        z = {name: (values[name] - stats[name][0]) / stats[name][1] for name in SIGNALS}
        shortfall = sum(min(z[name], 0.0) for name in CLEAN_SIGNALS)
        return float(weight * z[DOMAIN_SIGNAL] + shortfall)

    def check_columns(self, column_names: list[str]) -> None:
        """Refuse, before the model loads, rows this scorer cannot score."""
        if detect_format(column_names).is_preference:
            raise ValueError(_PAIRS_REFUSED)
        self.ica.check_columns(column_names)

    # -- scoring ---------------------------------------------------------------------------

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        fmt = detect_format(list(batch))
        if fmt.is_preference:
            raise ValueError(_PAIRS_REFUSED)
        if self._stats is None:
            self._calibrate(rank)
        columns, states = self.ica.score_batch(batch, rank, base_states=True)
        rows = base.prepare_rows(batch)
        num_rows = rows.num_rows
        signals = {name: [None] * num_rows for name in SIGNALS}
        if states is not None:
            signals["holdout_similarity"] = [None if np.isnan(v) else float(v)
                                             for v in self._similarity(states)]
        parsed = sorted(rows.parsed)
        if parsed:
            agreement = self._agreement([rows.parsed[i].question for i in parsed],
                                        [rows.parsed[i].responses[0] for i in parsed])
            for n, i in enumerate(parsed):
                signals["qa_agreement"][i] = float(agreement[n])
        signals["incontext_loglik"] = list(_per_token(columns, missing=None))
        signals["end_of_turn"] = list(columns["ica_logp_end"])
        columns["fit_score"] = [self.combine({name: signals[name][i] for name in SIGNALS})
                                for i in range(num_rows)]
        for name in SIGNALS:
            columns[f"fit_{name}"] = signals[name]
        return columns

    def features_for(self, dataset):
        """The features of ``dataset`` scored: pass as ``dataset.map(..., features=)``."""
        from datasets import Features

        return Features({**dataset.features, **self.output_features(dataset.column_names)})

    def output_features(self, column_names):
        from datasets import Value

        features = self.ica.output_features(column_names)
        for name in ("score", *SIGNALS):
            features[f"fit_{name}"] = Value("float64")
        return features


def _per_token(columns: dict[str, list], missing: float | None = np.nan) -> list:
    out = []
    for total, count in zip(columns["ica_logp_context"], columns["ica_num_response_tokens"]):
        out.append(total / count if total is not None and count else missing)
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _values(column) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in column], dtype=float)


def _rebuild(cls, holdout_rows, kwargs, identity):
    del identity  # carried only so that the pickle, and so the map fingerprint, includes it
    return cls(holdout_rows, **kwargs)
