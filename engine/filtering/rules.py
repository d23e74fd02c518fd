"""The paper's path filters (DESIGN.md section 1) and the pass that applies them to a sample job's paths.

Rules, in the order applied: pattern -> length -> repetition -> perplexity (-> confidence -> correctness,
optional and off by default: not in the paper) -> selection. Every path gets a verdict from every rule, even
after an earlier rule dropped it, so the independent failure counts of an ablation can be read back; the
"removed by" counts attribute a path to the first rule that dropped it. Selection keeps, per question, the
surviving path with the lowest rep-2 (``filters.select = "rep2"``, the paper; ties: branch, then sample, then id)
or the highest confidence (``"confidence"``: CoT-decoding's Δ of the answer; ties: lowest rep-2, then branch,
sample, id; a path without a confidence ranks below every path with one), or a seeded uniform pick
(``"random"``, the control: the question's survivors in branch/sample/id order, the index drawn by
``random.Random`` seeded with ``filters.seed`` and the question id, so re-applying a job picks the same path), or
the highest gold log-likelihood (``"gold_likelihood"``, LaTRO's self-reward: ``Path.gold_logp``, scored by the
filter stage with the student, :mod:`engine.filtering.gold`; ties and unscored paths as for confidence), or the
path a person chose on the review screen (``"curated"``: the chosen path, none where the question is marked
"no path", the rep-2 pick elsewhere; db/curation.py).

The rules read only what the sample stage stored (text, token count, rep-2, perplexity, confidence) and, for
``gold_likelihood``, the stored scores, so re-filtering with new thresholds needs no model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from db.vocabulary import CHOSEN, CONFIDENCE, CORRECTNESS, NO_PATH, OPTIONAL_RULES, RULES
from engine.answers import AnswerSpec, parse_path_answer  # noqa: F401  (re-exported: the filters' vocabulary)
from engine.config import FiltersConfig
from engine.repetition import rep2  # noqa: F401  (re-exported)

#: The filter rules are RULES, in the order applied; "confidence" and "correctness" follow "perplexity" where they are
#: switched on (OPTIONAL_RULES).
SELECTION = "selection"

#: A bare answer leaves fewer than this many words once answers and filler are removed.
BARE_MIN_WORDS = 3
#: A path "merely repeats the option list" when it names at least this many options ...
OPTION_LIST_MIN_OPTIONS = 2
#: ... and more than this share of its words belong to the list (labels, option texts, "answer choices").
OPTION_LIST_MAX_SHARE = 0.5


# -- numbers ----------------------------------------------------------------------------------------------
# rep2 (engine.repetition) is re-exported above: the rule's number, stored by sampling.


# -- verdicts ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"pass": self.passed, "reason": self.reason}


PASS = Verdict(True)


def length_verdict(tokens: int, min_tokens: int) -> Verdict:
    if tokens < min_tokens:
        return Verdict(False, f"{tokens} tokens < {min_tokens}")
    return PASS


def repetition_verdict(value: float | None, max_rep2: float) -> Verdict:
    if value is None:
        return Verdict(False, "no rep-2 recorded")
    if value > max_rep2:
        return Verdict(False, f"rep-2 {value:.3f} > {max_rep2:g}")
    return PASS


def perplexity_verdict(value: float | None, min_perplexity: float) -> Verdict:
    if value is None:
        return Verdict(False, "no perplexity recorded")
    if value < min_perplexity:
        return Verdict(False, f"perplexity {value:.2f} < {min_perplexity:g}")
    return PASS


def confidence_verdict(value: float | None, min_confidence: float) -> Verdict:
    if value is None:
        return Verdict(False, "no confidence recorded (no answer found, or sampled without margins)")
    if value < min_confidence:
        return Verdict(False, f"confidence {value:.3f} < {min_confidence:g}")
    return PASS


def correctness_verdict(answer: str | None, correct: bool | None, gold: str) -> Verdict:
    if answer is None:
        return Verdict(False, "no parseable answer")
    if not correct:
        return Verdict(False, f"answer {answer!r} != gold {gold!r}")
    return PASS


# -- the pattern rule -------------------------------------------------------------------------------------
#: "Question:" (or "Question 2:") anywhere: imitation when an "Answer:" follows it.
_QUESTION_RE = re.compile(r"\bquestion(?:[ \t]+\d+)?\s*:", re.IGNORECASE)
#: ... or at the start of a line: a new question begins ("restate the question: ..." mid-sentence does not).
_QUESTION_LINE_RE = re.compile(r"(?:^|\n)[ \t]*question(?:[ \t]+\d+)?\s*:", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(r"(?:^|\n)[ \t]*answer\s*:", re.IGNORECASE)
_Q_LINE_RE = re.compile(r"(?:^|\n)[ \t]*q\s*:", re.IGNORECASE)
_CHOICES_RE = re.compile(r"\banswer\s+choices\s*:?", re.IGNORECASE)  # the phrase, masked out of option lists
_CHOICES_HEADER_RE = re.compile(r"\banswer\s+choices\s*:", re.IGNORECASE)  # the prompt's header itself
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?$")
_LABEL_RE = re.compile(r"\(([A-Z])\)")
#: A label with its item when the question has no option list: "(A) yes", "(B) not at all".
_LABELED_ITEM_RE = re.compile(r"\(([A-Z])\)[ \t]*([^,;.\n()]{0,40})")

#: Words that are themselves an answer.
ANSWER_WORDS = frozenset({"yes", "no", "true", "false", "correct", "incorrect", "right", "wrong"})
#: Words that carry no reasoning around an answer: markers, articles, pronouns, copulas, hedges.
FILLER_WORDS = frozenset(
    """
    the a an answer answers is are was it it's its that that's this so therefore thus hence final option
    choice letter i i'm think believe guess say would be will definitely certainly probably maybe perhaps
    sure of course well ok okay indeed absolutely not simply just my our
    """.split()
)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def imitation_reason(text: str) -> str | None:
    """Why the text imitates the prompt's structure, or None."""
    question = _QUESTION_RE.search(text)
    if question is not None and re.search(r"\banswer\s*:", text[question.end() :], re.IGNORECASE):
        return 'imitates the prompt ("Question: ... Answer:")'
    if _QUESTION_LINE_RE.search(text):
        return 'starts a new "Question:"'
    if _Q_LINE_RE.search(text):
        return 'starts a new "Q:"'
    if _ANSWER_LINE_RE.search(text):
        return 'repeats "Answer:"'
    if _CHOICES_HEADER_RE.search(text):
        return 'repeats "Answer choices:"'
    return None


def option_list_share(text: str, choices: Sequence[str] | None) -> tuple[int, float]:
    """How many options the text names, and the share of its words that belong to an option list.

    List material: the labels "(A)", the question's option texts (or, without options, up to 40 characters
    after a label), and the phrase "answer choices"; "or"/"and" between them count with the list.
    """
    total = len(_words(text))
    if total == 0:
        return 0, 0.0
    named: set[int] = set()
    masked = _CHOICES_RE.sub(" ", text)
    for i, choice in enumerate(choices or []):
        choice = choice.strip()
        if not choice:
            continue
        pattern = re.compile(rf"(?<![\w]){re.escape(choice)}(?![\w])", re.IGNORECASE)
        if pattern.search(masked):
            named.add(i)
            masked = pattern.sub(" ", masked)
    label_re = _LABEL_RE if choices else _LABELED_ITEM_RE
    for match in label_re.finditer(masked):
        named.add(ord(match.group(1)) - ord("A"))
    masked = label_re.sub(" ", masked)
    left = [w for w in _words(masked) if w not in ("or", "and")]
    return len(named), 1.0 - len(left) / total


def bare_answer_left(text: str, choices: Sequence[str] | None, letters: str = "ABCDE") -> list[str]:
    """The words of ``text`` that are neither an answer nor filler.

    Removed: answer words (yes/no/true/false/...), numbers, choice labels and single choice letters, the
    question's option texts, answer markers and filler words. A path with fewer than ``BARE_MIN_WORDS`` words
    left is a bare direct answer.
    """
    masked = _LABEL_RE.sub(" ", text)
    for choice in choices or []:
        if choice.strip():
            masked = re.sub(rf"(?<![\w]){re.escape(choice.strip())}(?![\w])", " ", masked, flags=re.IGNORECASE)
    single_letters = {c.lower() for c in letters}
    return [
        w
        for w in _words(masked)
        if w not in ANSWER_WORDS
        and w not in FILLER_WORDS
        and not _NUMBER_RE.match(w)
        and not (len(w) == 1 and w in single_letters)
    ]


def pattern_verdict(text: str, choices: Sequence[str] | None = None, letters: str = "ABCDE") -> Verdict:
    """Drop prompt imitation, a repeated option list, or a bare direct answer (checked in that order)."""
    if not text.strip():
        return Verdict(False, "empty text")
    reason = imitation_reason(text)
    if reason:
        return Verdict(False, reason)
    named, share = option_list_share(text, choices)
    if named >= OPTION_LIST_MIN_OPTIONS and share > OPTION_LIST_MAX_SHARE:
        return Verdict(False, f"repeats the option list ({named} options, {share:.0%} of the words)")
    left = bare_answer_left(text, choices, letters)
    if len(left) < BARE_MIN_WORDS:
        shown = f": {' '.join(left)}" if left else ""
        return Verdict(False, f"bare answer ({len(left)} words besides the answer and filler{shown})")
    return PASS


# -- the pass over one question's paths ------------------------------------------------------------------
@dataclass
class PathInput:
    """What the rules read from one stored path."""

    id: int
    branch: int
    sample: int
    text: str
    tokens: int
    rep2: float | None
    perplexity: float | None
    confidence: float | None = None
    gold_logp: float | None = None
    decision: str | None = None  # a person's decision (select = "curated" reads the review screen's choice)


@dataclass
class QuestionInput:
    text: str
    answer: str  # normalised gold answer
    choices: list[str] | None = None
    id: int = 0  # the question's id: with filters.seed, the seed of select = "random"


@dataclass
class PathResult:
    id: int
    verdicts: dict[str, dict[str, Any]]
    passed: bool
    selected: bool
    answer: str | None
    correct: bool | None
    question_id: int = 0  # set by judge_job


def rules_in_order(cfg: FiltersConfig) -> list[str]:
    on = {CONFIDENCE: cfg.min_confidence > 0, CORRECTNESS: cfg.require_correct}
    return [*RULES, *(rule for rule in OPTIONAL_RULES if on[rule])]


@dataclass(frozen=True)
class Fixed:
    """What of a path's judgement no threshold moves: the pattern verdict and the parsed answer. The filter
    explorer computes it once per path and then re-runs only the threshold rules (``judge_question(fixed=)``)."""

    pattern: Verdict
    answer: str | None
    correct: bool


def fixed_part(path: PathInput, question: QuestionInput, spec: AnswerSpec) -> Fixed:
    answer, correct = parse_path_answer(path.text, question.answer, spec)
    return Fixed(pattern_verdict(path.text, question.choices, spec.letters), answer, correct)


def judge_question(
    paths: Sequence[PathInput],
    question: QuestionInput,
    cfg: FiltersConfig,
    spec: AnswerSpec | None = None,
    fixed: Sequence[Fixed] | None = None,
) -> list[PathResult]:
    """Every rule's verdict on every path of one question, plus the selection (at most one path).

    ``fixed``: the paths' :func:`fixed_part`, in the order of ``paths``, when the caller has them already."""
    spec = spec or AnswerSpec()
    results: list[PathResult] = []
    for i, path in enumerate(paths):
        pre = fixed[i] if fixed is not None else fixed_part(path, question, spec)
        answer, correct = pre.answer, pre.correct
        verdicts = {
            "pattern": pre.pattern,
            "length": length_verdict(path.tokens, cfg.min_tokens),
            "repetition": repetition_verdict(path.rep2, cfg.max_rep2),
            "perplexity": perplexity_verdict(path.perplexity, cfg.min_perplexity),
        }
        if cfg.min_confidence > 0:
            verdicts[CONFIDENCE] = confidence_verdict(path.confidence, cfg.min_confidence)
        if cfg.require_correct:
            verdicts[CORRECTNESS] = correctness_verdict(answer, correct, question.answer)
        passed = all(v.passed for v in verdicts.values())
        results.append(
            PathResult(
                id=path.id,
                verdicts={k: v.as_json() for k, v in verdicts.items()},
                passed=passed,
                selected=False,
                answer=answer,
                correct=correct,
            )
        )
    _select(paths, results, cfg.select, cfg.seed, question.id)
    return results


#: The stored number each ranked rule selects by: (PathInput field, how a verdict names it, highest or lowest wins).
RANKED = {
    "rep2": ("rep2", "rep-2", "lowest"),
    "confidence": ("confidence", "confidence", "highest"),
    "gold_likelihood": ("gold_logp", "gold log-likelihood", "highest"),
}


def selection_key(path: PathInput, select: str = "rep2") -> tuple:
    """The order of the selection, best first (the smallest key is kept): see the module docstring. ``random``
    has no order of its own (:func:`random_pick`); its survivors are listed in the rep-2 order."""
    order = (path.branch, path.sample, path.id)
    if select in ("confidence", "gold_likelihood"):
        value = getattr(path, RANKED[select][0])
        return (value is None, -(value or 0.0), path.rep2, *order)
    return (path.rep2, *order)


def random_pick(n: int, seed: int, question_id: int) -> int:
    """The index of the uniform pick among ``n`` survivors (in branch, sample, id order) of question
    ``question_id``: ``random.Random`` seeded with a string, which it hashes (SHA-512) the same way in every
    process and Python version, so the pick is a pure function of (n, seed, question id)."""
    return random.Random(f"sert-select:{seed}:{question_id}").randrange(n)


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def _select(
    paths: Sequence[PathInput],
    results: list[PathResult],
    select: str = "rep2",
    seed: int = 0,
    question_id: int = 0,
) -> None:
    if select == "curated" and _select_curated(paths, results):
        return
    survivors = [(p, r) for p, r in zip(paths, results, strict=True) if r.passed]
    if not survivors:
        for r in results:
            r.verdicts[SELECTION] = Verdict(False, "no path of this question passed the filters").as_json()
        return
    n = len(survivors)
    of_n = f"{n} surviving path{'s' if n > 1 else ''}"
    if select == "random":
        ordered = sorted(survivors, key=lambda pr: (pr[0].branch, pr[0].sample, pr[0].id))
        best_path, best = ordered[random_pick(n, seed, question_id)]
        kept = Verdict(True, f"random pick among {of_n} (seed {seed})")
        where = f"branch {best_path.branch} sample {best_path.sample}"

        def lost(_path: PathInput) -> Verdict:
            return Verdict(False, f"{where} was picked at random (seed {seed})")
    else:
        best_path, best = min(survivors, key=lambda pr: selection_key(pr[0], select))
        column, measure, extreme = RANKED.get(select, RANKED["rep2"])
        mine = _number(getattr(best_path, column))
        kept = Verdict(True, f"{extreme} {measure} ({mine}) of {of_n}")
        where = f"branch {best_path.branch} sample {best_path.sample}"

        def lost(path: PathInput) -> Verdict:
            return Verdict(False, f"{where} was kept ({measure} {mine} vs {_number(getattr(path, column))})")

    best.selected = True
    for path, r in zip(paths, results, strict=True):
        if r is best:
            v = kept
        elif r.passed:
            v = lost(path)
        else:
            v = Verdict(False, "did not pass the filters")
        r.verdicts[SELECTION] = v.as_json()


def _select_curated(paths: Sequence[PathInput], results: list[PathResult]) -> bool:
    """``select = "curated"``: the path chosen on the review screen (even one that failed a rule: the person saw
    it), or nothing where the question is marked "no path"; False where no choice was made (the rep-2 pick)."""
    chosen = next((r for p, r in zip(paths, results, strict=True) if p.decision == CHOSEN), None)
    if chosen is None and not any(p.decision == NO_PATH for p in paths):
        return False
    for r in results:
        r.selected = r is chosen
        reason = (
            "chosen by hand (review screen)"
            if r is chosen
            else ("another path was chosen by hand" if chosen is not None else "no path good enough (marked by hand)")
        )
        r.verdicts[SELECTION] = Verdict(r is chosen, reason).as_json()
    return True


# -- counts -----------------------------------------------------------------------------------------------
@dataclass
class FilterCounts:
    rules: list[str]
    questions: set[int] = field(default_factory=set)
    paths: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # by the first rule that dropped the path
    failed: dict[str, int] = field(default_factory=dict)  # every rule's own failures (the ablation)
    selected: int = 0

    def __post_init__(self) -> None:
        self.removed = {r: 0 for r in self.rules}
        self.failed = {r: 0 for r in self.rules}

    def add(self, question_id: int, verdicts: dict[str, Any], selected: bool) -> None:
        self.questions.add(question_id)
        self.paths += 1
        self.selected += bool(selected)
        first = True
        for rule in self.rules:
            verdict = verdicts.get(rule)
            if verdict is None or verdict.get("pass"):
                continue
            self.failed[rule] += 1
            if first:
                self.removed[rule] += 1
                first = False

    def as_json(self) -> dict[str, Any]:
        return {
            "questions": len(self.questions),
            "paths": self.paths,
            "removed": dict(self.removed),
            "selected": self.selected,
            "failed": dict(self.failed),
        }


def count_verdicts(rows: Iterable[tuple[int, dict[str, Any], bool]], rules: Sequence[str]) -> dict[str, Any]:
    """Counts over ``(question_id, verdicts, selected)`` rows: questions, paths, removed, selected, failed."""
    counts = FilterCounts(list(rules))
    for question_id, verdicts, selected in rows:
        counts.add(question_id, verdicts, selected)
    return counts.as_json()


def rules_of(verdicts: dict[str, Any]) -> list[str]:
    """The filter rules a stored verdicts dict holds, in the order applied."""
    order = [*RULES, *OPTIONAL_RULES]
    return [r for r in order if r in verdicts]


# -- the pass over a job's paths in the workspace --------------------------------------------------------
def apply_to_job(session: Any, job_id: int, cfg: FiltersConfig, spec: AnswerSpec, filter_job_id: int) -> dict[str, Any]:
    """Judge every self-sampled path of sample job ``job_id`` as filter job ``filter_job_id``: its own rows in
    ``filter_verdicts`` (verdicts, passed, selected), and the path rows' display copy of them plus the parsed
    answer and correctness; the sample job's ``summary["filter_job"]`` names it (db.filter_verdicts).

    Runs in the caller's transaction (all or nothing); people's decisions are left untouched. Returns the
    counts of :func:`count_verdicts`.
    """
    from db import filter_verdicts
    from db.models import Job, Path

    results, counts = judge_job(session, job_id, cfg, spec)
    filter_verdicts.write(
        session,
        filter_job_id,
        [{"path_id": r.id, "verdicts": r.verdicts, "passed": r.passed, "selected": r.selected} for r in results],
    )
    sample_job = session.get(Job, job_id)
    sample_job.summary = {**(sample_job.summary or {}), "filter_job": filter_job_id}
    session.add(sample_job)
    if results:
        session.bulk_update_mappings(
            Path,
            [
                {
                    "id": r.id,
                    "verdicts": r.verdicts,
                    "passed": r.passed,
                    "selected": r.selected,
                    "answer": r.answer,
                    "correct": r.correct,
                }
                for r in results
            ],
        )
    return counts


def judge_job(
    session: Any, job_id: int, cfg: FiltersConfig, spec: AnswerSpec
) -> tuple[list[PathResult], dict[str, Any]]:
    """The rules' results on every self-sampled path of ``job_id`` from its stored texts and numbers, and their
    counts; reads only (``apply_to_job`` writes them; the filter explorer recounts with other settings)."""
    return judge_inputs(job_inputs(session, job_id), cfg, spec)


#: A job's paths as the rules read them: question id -> (the question, its paths in branch/sample order).
JobInputs = dict[int, tuple[QuestionInput, list[PathInput]]]


def job_inputs(session: Any, job_id: int) -> JobInputs:
    """What the rules read of every self-sampled path of ``job_id``, per question (one read)."""
    from sqlmodel import select

    from db.models import Path, Question

    rows = session.exec(
        select(
            Path.id,
            Path.question_id,
            Path.branch,
            Path.sample,
            Path.text,
            Path.tokens,
            Path.rep2,
            Path.perplexity,
            Path.confidence,
            Path.gold_logp,
            Path.decision,
            Question.text,
            Question.answer,
            Question.choices,
        )
        .join(Question, Question.id == Path.question_id)
        .where(Path.job_id == job_id, Path.source == "self")
        .order_by(Path.question_id, Path.branch, Path.sample, Path.id)
    ).all()
    by_question: dict[int, tuple[QuestionInput, list[PathInput]]] = {}
    for pid, qid, branch, sample, text, tokens, r2, ppl, conf, gold_lp, decision, qtext, gold, choices in rows:
        entry = by_question.setdefault(qid, (QuestionInput(qtext, gold, choices, qid), []))
        entry[1].append(PathInput(pid, branch, sample, text, tokens, r2, ppl, conf, gold_lp, decision))
    return by_question


def judge_inputs(
    by_question: JobInputs, cfg: FiltersConfig, spec: AnswerSpec, fixed: dict[int, list[Fixed]] | None = None
) -> tuple[list[PathResult], dict[str, Any]]:
    """:func:`judge_question` over every question of ``by_question`` (``fixed``: per question id), and the counts."""
    counts = FilterCounts(rules_in_order(cfg))
    results: list[PathResult] = []
    for qid, (question, paths) in by_question.items():
        pre = fixed.get(qid) if fixed is not None else None
        for result in judge_question(paths, question, cfg, spec, pre):
            result.question_id = qid
            counts.add(qid, result.verdicts, result.selected)
            results.append(result)
    return results, counts.as_json()
