"""Column and key names shared by every part of ica_hub, in one place.

A scored dataset keeps its scores as columns beside a stable ``example_id``; nothing lives in a
side file that could drift from its rows.
"""

# Identity of a row, stable across shuffles, shards and versions.
EXAMPLE_ID = "example_id"

# Example weight read by the weighted trainers when no score column is used.
EXAMPLE_WEIGHT = "example_weight"

# Columns the ICA scorer adds. Sums are over response tokens; "per_token" divides by their count.
ICA_SCORE = "ica_score"
ICA_SCORE_PER_TOKEN = "ica_score_per_token"
ICA_LOGP_BASE = "ica_logp_base"
ICA_LOGP_CONTEXT = "ica_logp_context"
ICA_NUM_RESPONSE_TOKENS = "ica_num_response_tokens"
ICA_DEMONSTRATIONS = "ica_demonstrations"
ICA_FLAG = "ica_flag"

# Preference rows: the scorer also keeps each side's log-probs and token counts.
ICA_LOGP_BASE_CHOSEN = "ica_logp_base_chosen"
ICA_LOGP_BASE_REJECTED = "ica_logp_base_rejected"
ICA_LOGP_CONTEXT_CHOSEN = "ica_logp_context_chosen"
ICA_LOGP_CONTEXT_REJECTED = "ica_logp_context_rejected"
ICA_NUM_TOKENS_CHOSEN = "ica_num_tokens_chosen"
ICA_NUM_TOKENS_REJECTED = "ica_num_tokens_rejected"

# Demo data only: why a pool row was built (target, off_domain, swapped, truncated, corrupted).
# Kept for evaluation; never read by scoring or training.
ROW_KIND = "row_kind"
# Demo data only: the domain of a pool row's question (target, off_domain), noisy rows included.
ROW_DOMAIN = "row_domain"

# Provenance keys, written by every scorer and read by the Hub versions and the Space.
PROVENANCE_KEYS = (
    "scorer",  # versioned scorer name, e.g. "ica/v1"
    "model",  # path or Hub id
    "model_revision",
    "model_weights_hash",
    "training_step",
    "holdout",  # repo id or local description
    "holdout_revision",
    "holdout_hash",
    "k",
    "selection",  # "nearest" or "fixed"
    "layout",
    "embedder",
    "chat_template_hash",
    "ica_hub_version",
    "created_at",
    "settings",  # every score-changing setting of the scorer, as a dict
)
