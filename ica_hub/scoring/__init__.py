"""Scorers for ``dataset.map(scorer, batched=True)``: ICA and the baselines it is judged against."""

from ica_hub.scoring.baselines import LikelihoodScorer, RhoLossScorer
from ica_hub.scoring.fit import HoldoutFitScorer
from ica_hub.scoring.ica import ICAScorer
from ica_hub.scoring.rescore import make_rescorer

__all__ = ["HoldoutFitScorer", "ICAScorer", "LikelihoodScorer", "RhoLossScorer", "make_rescorer"]
