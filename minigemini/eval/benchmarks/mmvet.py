"""MM-Vet: official submission file; capability scores only with an LLM judge.

Official files read (MM-Vet release, LLaVA layout `playground/data/eval/mm-vet`):

* `mm-vet.json`: `{"v1_0": {"imagename": "v1_0.png", "question", "answer",
  "capability": ["ocr", "math", ...]}, ...}`;
* images `images/<imagename>`.

Prompt: `<image>\\n<question>` (as LLaVA's `llava-mm-vet.jsonl`, no answer-format instruction).

Evaluator followed: MM-Vet's `mm-vet_evaluator` (GPT-4 grades each answer 0.0-1.0 against
the ground truth; total = mean * 100; each capability = mean over the samples having it; each
capability integration = mean over samples with exactly that capability set). That grading
needs an LLM: pass `judge=` (see `minigemini.eval.judge`). Without a judge no number is made
up: results carry a `status` message, and `write_submission` writes the official
`{"v1_0": "answer", ...}` JSON (LLaVA `convert_mmvet_for_eval.py`) for the MM-Vet server.

Answer files accepted (auto-detected): the native JSONL (ids `v1_<k>`); the answers JSONL MGM/
LLaVA `model_vqa.py` writes from `llava-mm-vet.jsonl` (integer `question_id` k = sample
`v1_<k>`, as `convert_mmvet_for_eval.py` maps it); and that script's output, the official
MM-Vet results JSON `{"v1_0": "answer", ...}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, Benchmark, EvalItem, Metrics,
                                             QuestionId, Scope, in_scope, load_json)
from minigemini.eval.judge import judge_score, require_judge

MODEL_VQA_FORMAT = "MGM/LLaVA model_vqa.py answers JSONL with integer question_id k (= MM-Vet sample v1_k)"
RESULTS_FORMAT = 'official MM-Vet results JSON {"v1_0": "answer", ...} (convert_mmvet_for_eval.py)'
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
NEEDS_JUDGE = ("MM-Vet is graded by an LLM (GPT-4): no local score without judge=...; upload "
               "the submission JSON to the official MM-Vet evaluator instead.")


class MMVet(Benchmark):
    """MM-Vet open-ended benchmark."""

    name = "mmvet"
    LAYOUT = "  mm-vet.json\n  images/<imagename>  (e.g. images/v1_0.png)"
    OPTIONS = {"judge": None, "image_dir": "images"}
    default_max_new_tokens = 1024  # as MGM model_vqa.py
    ANSWER_FORMATS = (MODEL_VQA_FORMAT, RESULTS_FORMAT)

    def _samples(self) -> dict[str, dict[str, Any]]:
        return load_json(self.find_file("mm-vet.json"))

    def items(self) -> list[EvalItem]:
        image_dir = self.data_dir / self.options["image_dir"]
        return [EvalItem(question_id=key, prompt=f"{IMAGE_TOKEN}\n{self.ask(s['question'])}",
                         image_paths=[str(image_dir / s["imagename"])],
                         meta={"capability": list(s.get("capability", []))})
                for key, s in self._samples().items()]

    def question_ids(self) -> list[QuestionId]:
        return list(self._samples())

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        doc = raw.document
        if raw.kind == "json" and isinstance(doc, dict) and doc and all(isinstance(v, str) for v in doc.values()):
            return build_answer_set(raw, ((0, k, v) for k, v in doc.items()), RESULTS_FORMAT)
        if raw.kind == "jsonl" and raw.has_keys("question_id", "text") and all(
                isinstance(r["question_id"], int) or str(r["question_id"]).isdigit() for _, r in raw.rows):
            return build_answer_set(raw, ((n, f"v1_{r['question_id']}", r["text"]) for n, r in raw.rows),
                                    MODEL_VQA_FORMAT)
        return None

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        samples = {k: s for k, s in self._samples().items() if in_scope(k, scope)}
        judge = self.options["judge"]
        if judge is None:
            return {"status": NEEDS_JUDGE, "num_questions": len(samples)}
        require_judge(judge)
        scores = {k: (judge_score(judge, s["question"], s["answer"], answers[k])
                      if k in answers else 0.0) for k, s in samples.items()}
        out: Metrics = {"total": 100 * sum(scores.values()) / len(scores) if scores else 0.0}
        per_cap: dict[str, float] = {}
        for cap in CAPABILITIES:
            vals = [scores[k] for k, s in samples.items() if cap in s.get("capability", [])]
            if vals:
                per_cap[cap] = 100 * sum(vals) / len(vals)
        combos: dict[str, list[float]] = {}
        for k, s in samples.items():
            combos.setdefault("_".join(sorted(s.get("capability", []))), []).append(scores[k])
        per_combo = {c: 100 * sum(v) / len(v) for c, v in sorted(combos.items())}
        out.update(per_capability=per_cap, per_capability_integration=per_combo,
                   num_questions=len(samples))
        return out

    def write_submission(self, answers: dict[QuestionId, str], out_dir: Path) -> list[Path]:
        """Official MM-Vet results JSON: {"v1_0": "answer", ...} (missing answers as "")."""
        path = Path(out_dir) / "mmvet_submission.json"
        path.write_text(json.dumps({k: answers.get(k, "") for k in self._samples()},
                                   ensure_ascii=False, indent=1), encoding="utf-8")
        return [path]
