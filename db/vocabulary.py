"""The tool's vocabulary: every name that is stored in a workspace or shown as a label, defined once.

These strings are values of the database's columns (``jobs.kind``, ``evaluations.label``, ``metrics.name``,
the keys of ``paths.verdicts``), so they live at the bottom layer, where the engine and the app both import
them. A new stage, rule, label or metric is added here first.
"""

from __future__ import annotations

# -- job kinds and stages ----------------------------------------------------------------------------------
SAMPLE = "sample"
FILTER = "filter"
SELF_TRAIN = "self-train"
TEACHER = "teacher"
DISTILL = "distill"
FINETUNE_KIND = "finetune"
EVAL = "eval"
ALL = "all"

#: Every job kind, in the order of the method (DESIGN.md section 1).
JOB_KINDS: tuple[str, ...] = (SAMPLE, FILTER, SELF_TRAIN, TEACHER, DISTILL, FINETUNE_KIND, EVAL)
#: What ``sert-tui run --stage`` accepts: every job kind, and ``all`` for the whole chain.
STAGE_NAMES: tuple[str, ...] = (*JOB_KINDS, ALL)
#: Jobs that train a model (and write checkpoints and metrics): the stages ``--launcher accelerate`` runs and
#: the training sets ``export set`` writes.
TRAINING_KINDS: tuple[str, ...] = (SELF_TRAIN, DISTILL, FINETUNE_KIND)
#: Jobs whose rows are paths (the paths screen opens them).
PATH_KINDS: tuple[str, ...] = (SAMPLE, FILTER, TEACHER)
#: What the app's ``d`` (the embedded default) runs on a fresh workspace.
DEFAULT_STAGES: tuple[str, ...] = (SAMPLE, FILTER)

# -- filter rules --------------------------------------------------------------------------------------------
PATTERN = "pattern"
LENGTH = "length"
REPETITION = "repetition"
PERPLEXITY = "perplexity"
CONFIDENCE = "confidence"  # optional (filters.min_confidence > 0), not in the paper: CoT-decoding's answer confidence
CORRECTNESS = "correctness"  # optional, not in the paper
#: The paper's filter rules in the order the filter stage applies them; selection follows.
RULES: tuple[str, ...] = (PATTERN, LENGTH, REPETITION, PERPLEXITY)
#: The optional rules, applied after RULES (in this order) where they are switched on.
OPTIONAL_RULES: tuple[str, ...] = (CONFIDENCE, CORRECTNESS)

# -- run labels (the paper's Table II) -----------------------------------------------------------------------
ZERO_SHOT = "zero-shot"
FINETUNE = "Finetune"
SERT = "SERT"
RD = "RD"
SERT_RD = "SERT+RD"
MAJORITY = "majority"  # the majority-class baseline beside the runs (not a model)
UNLABELLED = "(unlabelled)"
#: Table II's columns in the paper's order, then the zero-shot base model.
TABLE_ORDER: tuple[str, ...] = (FINETUNE, SERT, RD, SERT_RD, ZERO_SHOT)

# -- metrics the training loop writes per step ---------------------------------------------------------------
METRIC_LOSS = "loss"
METRIC_LR = "lr"
METRIC_GRAD_NORM = "grad_norm"
METRIC_TOKENS_PER_S = "tokens_per_s"
METRIC_EPOCH = "epoch"
METRIC_MEMORY_MB = "memory_mb"  # CUDA only: peak allocated
METRIC_MEMORY_RESERVED_MB = "memory_reserved_mb"  # CUDA only
