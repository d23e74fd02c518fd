"""The teacher's answer: graded with the shared parser (engine.answers, Fine-tune-CoT's rules).

Recorded completions continue a prompt that ended with ``TEACHER_MARKER``, so the importer prepends it.
"""

from __future__ import annotations

from engine import answers

TEACHER_MARKER = "Therefore, the answer is"


def grade(text: str, gold: str, answer_type: str, letters: str = "ABCDE") -> tuple[str | None, bool]:
    """(parsed answer, correct against the gold answer)."""
    answer = answers.parse_answer(text, answer_type, letters)
    return answer, answers.is_correct(answer, gold, answer_type)
