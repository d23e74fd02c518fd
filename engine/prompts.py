"""Every text the tool puts in front of a model, side by side, and why they differ.

1. **Sampling (stage 1)**, ``Question: {q}\\nAnswer:``: the paper's zero-shot prompt, with no chain-of-thought
   trigger. The latent reasoning paths are the student's own continuation of exactly this text.
2. **Training and evaluation (stages 2, 3 and every evaluation)**, ``Question: {q}. Answer:``: the paper's
   stage-2 template. The sampled paths are trained on behind it, the paths having been found with prompt 1,
   as in the paper. When the question already ends with ``?``, ``.`` or ``!`` no period is added: every
   StrategyQA question ends in ``?`` and would read ``...?. Answer:``. Evaluation uses the same prompt, so a
   model is asked the way it was trained.
3. **Teacher (stage 3)**, prompt 2 + `` Let's think step by step.``: Fine-tune-CoT's trigger, so that the
   rationale R continues the very text the distillation sample ``{prompt 2} Let's think step by step. {R} So
   the answer is {a}.`` puts before it. (The recorded text-davinci-002 rationales in ../shared/data were asked
   by the Fine-tune-CoT authors with their own ``Q: {q}\\nA: Let's think step by step.``; their completions
   continue after ``Therefore, the answer is``, the marker the importer puts back.)
4. **Judge** (optional): asks an OpenAI-compatible model for four 0-10 scores of one output as JSON.

The training formats built on prompt 2 are in engine.training.datasets; the answer parser in engine.answers.
"""

from __future__ import annotations

#: Prompt 1: the student's zero-shot prompt for sampling latent paths.
SAMPLING_PROMPT = "Question: {question}\nAnswer:"
#: The chain-of-thought trigger of prompt 3 and of the distillation samples.
COT_TRIGGER = "Let's think step by step."
#: The answer sentence that ends every training sample (`` So the answer is {a}.``) and that the parser reads.
ANSWER_MARKER = "So the answer is"
#: Where the recorded teacher completions start (the end of Fine-tune-CoT's second prompt).
TEACHER_MARKER = "Therefore, the answer is"
#: Bumped when prompt 3 changes, so that a teacher job asked with an older prompt is not resumed with this one.
TEACHER_PROMPT_VERSION = 2  # 2: no "." added after a question that ends in "?" (it read "?. Answer:")


def sampling_prompt(question: str) -> str:
    """Prompt 1 (the paper's zero-shot prompt; no chain-of-thought trigger)."""
    return SAMPLING_PROMPT.format(question=question)


def clean(text: str) -> str:
    """Whitespace collapsed to single spaces."""
    return " ".join(text.split())


def training_prompt(question: str) -> str:
    """Prompt 2: ``Question: {q}. Answer:``, no second period after a question that ends in one."""
    q = clean(question)
    sep = "" if q.endswith(("?", ".", "!")) else "."
    return f"Question: {q}{sep} Answer:"


def teacher_prompt(question: str) -> str:
    """Prompt 3: prompt 2 followed by the trigger."""
    return f"{training_prompt(question)} {COT_TRIGGER}"


JUDGE_PROMPT = """You are grading the reasoning a student model wrote for a question.

Question: {question}
Reference answer: {gold}
Student's output: {output}

Rate the student's reasoning from 0 (worst) to 10 (best) on each criterion:
- coherence: the steps follow one another clearly;
- relevance: the steps are about the question;
- logical_consistency: no step contradicts another or the conclusion;
- completeness: the reasoning reaches an answer with no missing step.
Reply with one JSON object only, for example:
{{"coherence": 7, "relevance": 8, "logical_consistency": 6, "completeness": 5}}"""


def judge_prompt(question: str, gold: str, output: str) -> str:
    """Prompt 4."""
    return JUDGE_PROMPT.format(question=question, gold=gold, output=output.strip() or "(empty)")
