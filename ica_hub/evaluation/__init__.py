"""Evaluation: metric modules kept in the repo, model and score evaluation, a pairwise judge.

- ``ica_hub.evaluation.metrics``: ``load_metric(name)`` for the ``evaluate`` modules
  ``response_loss``, ``preference_accuracy`` and ``score_auroc``;
- ``ica_hub.evaluation.evaluate_model``: ``evaluate_model``, ``response_logps``,
  ``score_quality``;
- ``ica_hub.evaluation.judge``: ``generate_answers``, ``judge_pairwise``, ``make_judge``;
- ``ica_hub.evaluation.recipe`` and ``.run``: ``ica-hub eval <recipe>.yaml``.
"""
