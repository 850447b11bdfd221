"""Scorers for ``dataset.map(scorer, batched=True)``: ICA and the baselines it is judged against."""

from ica_hub.scoring.baselines import LikelihoodScorer, RhoLossScorer
from ica_hub.scoring.ica import ICAScorer
from ica_hub.scoring.rescore import make_rescorer

__all__ = ["ICAScorer", "LikelihoodScorer", "RhoLossScorer", "make_rescorer"]
