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
#: What the app's ``d`` and ``sert-tui run --default`` (the embedded default) run on a fresh workspace: the whole
#: loop, ending with the evaluation of the zero-shot base model and of the SERT model.
DEFAULT_STAGES: tuple[str, ...] = (SAMPLE, FILTER, SELF_TRAIN, EVAL)

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

# -- a person's decisions on a path (``paths.decision``; None: undecided) ------------------------------------
ACCEPTED = "accepted"
REJECTED = "rejected"
IGNORED = "ignored"
#: The review screen's choice: this path is its question's training path, alone (db.curation).
CHOSEN = "chosen"
#: The review screen's "no path is good enough": on every path of the question, which then trains on nothing.
NO_PATH = "no-path"
#: Every decision a path can carry, in the order the screens list them.
DECISIONS: tuple[str, ...] = (ACCEPTED, REJECTED, IGNORED, CHOSEN, NO_PATH)
#: The decisions that make a question "done" on the review screen (a choice, or none is good enough).
CHOICES: tuple[str, ...] = (CHOSEN, NO_PATH)

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
#: The label of the model of self-training round r > 1 (``run --stage self-train --rounds N``): "SERT r2".
#: Round 1 is the plain label, so that a single-round run and round 1 of several are the same job.
ROUND_LABEL = "{label} r{round}"
#: The key of a self-train job's summary that holds its round (absent: round 1); the lineage label reads it.
ROUND_KEY = "round"


def round_label(label: str, round_no: int) -> str:
    """The label of round ``round_no`` of a run labelled ``label`` (round 1: ``label`` itself)."""
    return label if round_no <= 1 else ROUND_LABEL.format(label=label, round=round_no)


def label_round(label: str) -> tuple[str, int]:
    """``(label of round 1, round)`` of a run label: ``("SERT", 2)`` for "SERT r2", ``(label, 1)`` otherwise."""
    head, sep, tail = label.rpartition(" r")
    if sep and head and tail.isdigit() and int(tail) > 1 and round_label(head, int(tail)) == label:
        return head, int(tail)
    return label, 1


# -- metrics the training loop writes per step ---------------------------------------------------------------
METRIC_LOSS = "loss"
METRIC_LR = "lr"
METRIC_GRAD_NORM = "grad_norm"
METRIC_TOKENS_PER_S = "tokens_per_s"
METRIC_EPOCH = "epoch"
METRIC_MEMORY_MB = "memory_mb"  # CUDA only: peak allocated
METRIC_MEMORY_RESERVED_MB = "memory_reserved_mb"  # CUDA only
