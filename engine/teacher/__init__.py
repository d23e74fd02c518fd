"""The teacher of reasoning distillation (DESIGN.md section 1, stage 3).

Rationales come from any OpenAI-compatible endpoint (``stage``: the online stage, ``batch``: the OpenAI Batch
API) or from recorded files (``recorded``: the Fine-tune-CoT release). Each rationale is a row of ``paths``
with ``source="teacher"``; ``query`` finds them for the distillation stage. ``judge`` scores evaluation outputs
through the same client. Nothing here imports torch.
"""
