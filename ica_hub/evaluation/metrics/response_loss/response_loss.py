"""``response_loss``: negative log-likelihood per response token, and perplexity.

Inputs are per example: the summed log-probability of its response tokens (``logprobs``) and
how many tokens that sum covers (``num_tokens``). Two means come out, because they answer
different questions: ``loss`` weighs every token equally (long answers count more; this is the
loss the SFT objective reports), ``mean_example_loss`` weighs every example equally.

A row whose sum or count is missing, NaN or not positive (e.g. a response too long to score) is
left out of both means and counted in ``num_skipped``, never averaged in as zero.
"""

import math

import datasets
import evaluate

_DESCRIPTION = """Token-weighted NLL (``loss``), ``perplexity`` = exp(loss), and the mean over
examples of each example's NLL per token (``mean_example_loss``), from per-example summed
response log-probabilities and token counts."""

_INPUTS = """
Args:
    logprobs (list of float): per example, the sum of log p(token) over the response's tokens.
    num_tokens (list of int): per example, the number of response tokens in that sum.
Returns:
    loss (float): -sum(logprobs) / sum(num_tokens) over the rows kept; NaN when none is kept.
    perplexity (float): exp(loss).
    mean_example_loss (float): mean over kept rows of -logprobs / num_tokens.
    num_examples (int): rows kept.
    num_tokens (int): tokens of the rows kept.
    num_skipped (int): rows with a missing or NaN value, or fewer than one token.
Example:
    >>> metric.compute(logprobs=[-2.0, -4.0], num_tokens=[1, 3])["loss"]
    1.5
"""


class ResponseLoss(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({
                "logprobs": datasets.Value("float64"),
                "num_tokens": datasets.Value("int64"),
            }),
        )

    def _compute(self, logprobs, num_tokens):
        kept = [(logp, count) for logp, count in zip(logprobs, num_tokens)
                if logp is not None and count is not None and not math.isnan(logp) and count > 0]
        total_logp = sum(logp for logp, _ in kept)
        total_tokens = sum(count for _, count in kept)
        loss = -total_logp / total_tokens if kept else math.nan
        example_losses = [-logp / count for logp, count in kept]
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if kept else math.nan,
            "mean_example_loss": sum(example_losses) / len(kept) if kept else math.nan,
            "num_examples": len(kept),
            "num_tokens": int(total_tokens),
            "num_skipped": len(logprobs) - len(kept),
        }
