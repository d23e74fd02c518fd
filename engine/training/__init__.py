"""Supervised fine-tuning for SERT (self-train), reasoning distillation (distill) and the answers-only
baseline (finetune): training sets (``datasets``), the engine (``trainer``), checkpoints (``checkpoints``) and
the pipeline stages (``stage``)."""
