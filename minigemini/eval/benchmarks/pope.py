"""POPE (COCO val2014): per split accuracy, precision, recall, F1 and yes-ratio.

Official files read (LLaVA layout `playground/data/eval/pope`):

* `coco/coco_pope_{adversarial,popular,random}.json` (or directly in the data dir): the POPE
  label files, JSON lines `{"question_id", "image", "text", "label": "yes"|"no"}`;
* `llava_pope_test.jsonl` (optional): LLaVA's question file (`question_id`, `image`, `text`,
  `category` = split). Without it, items are built from the label files with ids
  `"<split>_<question_id>"` and the short-answer instruction;
* images `val2014/<image>`.

Evaluator followed: LLaVA `llava/eval/eval_pope.py`: keep the text before the first '.',
drop commas, split on spaces; "No"/"no"/"not" among the words -> no, otherwise yes. Labels
are matched to questions by (split, image, question text) instead of by file position. A
missing answer is scored as wrong (counted as the opposite of its label). Top-level metrics are
the means over the splits (LLaVA-1.5 / Mini-Gemini report the mean F1); `per_split` has each.
Answer files accepted: the native answers JSONL and the one LLaVA `model_vqa_loader.py` writes
(its `question_id`s are those of `llava_pope_test.jsonl`, which must then be in the data dir).

Scoring a subset (`eval --limit`): questions are independent; a split with no scored question
is left out of `per_split` and of the means.
"""

from __future__ import annotations

from typing import Any

from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             BenchmarkDataError, EvalItem, Metrics, QuestionId,
                                             Scope, in_scope, load_jsonl, pct)

SPLITS = ("adversarial", "popular", "random")
LOADER_FORMAT = ("LLaVA model_vqa_loader.py answers JSONL with the question ids of llava_pope_test.jsonl "
                 "(put that file in --data-dir)")


def pope_parse(text: str) -> str:
    """LLaVA POPE answer parsing: 'yes' or 'no'."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def binary_metrics(preds: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy/precision/recall/F1/yes-ratio (percent) with 'yes' as the positive class."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, labels))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, labels))
    tn = sum(p == "no" and g == "no" for p, g in zip(preds, labels))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": pct(tp + tn, len(labels)), "precision": 100 * precision,
            "recall": 100 * recall, "f1": 100 * f1,
            "yes_ratio": pct(sum(p == "yes" for p in preds), len(preds)),
            "num_questions": len(labels)}


class POPE(Benchmark):
    """POPE object-hallucination benchmark (three COCO splits)."""

    name = "pope"
    LAYOUT = ("  coco/coco_pope_adversarial.json, coco_pope_popular.json, coco_pope_random.json\n"
              "      (label files, JSON lines; may also sit directly in the data dir)\n"
              "  llava_pope_test.jsonl   (optional; LLaVA question file)\n"
              "  val2014/<image>")
    OPTIONS = {"question_file": "llava_pope_test.jsonl", "image_dir": "val2014",
               "splits": SPLITS}
    default_max_new_tokens = 128  # as MGM/LLaVA model_vqa_loader.py
    DEFAULT_PROMPT_SUFFIX = SHORT_ANSWER_PROMPT
    ANSWER_FORMATS = (LOADER_FORMAT,)

    def _labels(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for split in self.options["splits"]:
            fname = f"coco_pope_{split}.json"
            out[split] = load_jsonl(self.find_file(f"coco/{fname}", fname))
        return out

    def _records(self) -> list[dict[str, Any]]:
        """One record per question: id, split, image, text, prompt text and label."""
        labels = self._labels()
        qfile = self.find_file(self.options["question_file"], required=False)
        if qfile is None:
            return [{"question_id": f"{split}_{row['question_id']}", "split": split,
                     "image": row["image"], "text": self.ask(row["text"]),
                     "label": row["label"]}
                    for split, rows in labels.items() for row in rows]
        keyed = {(s, r["image"], r["text"].strip()): r["label"]
                 for s, rows in labels.items() for r in rows}
        out = []
        for row in load_jsonl(qfile):
            split = row.get("category")
            if split not in labels:
                continue
            question = row["text"].split("\n")[0].strip()
            key = (split, row["image"], question)
            if key not in keyed:
                raise BenchmarkDataError(f"{self.name}: no label for {key} in coco_pope_{split}")
            out.append({"question_id": row["question_id"], "split": split, "image": row["image"],
                        "text": self.ask_file_text(row["text"]), "label": keyed[key]})
        return out

    def items(self) -> list[EvalItem]:
        image_dir = self.data_dir / self.options["image_dir"]
        return [EvalItem(question_id=r["question_id"], prompt=f"{IMAGE_TOKEN}\n{r['text']}",
                         image_paths=[str(image_dir / r["image"])],
                         meta={"split": r["split"], "image": r["image"]})
                for r in self._records()]

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        per_split: dict[str, tuple[list[str], list[str]]] = {}
        for r in self._records():
            if not in_scope(r["question_id"], scope):
                continue
            label = "no" if r["label"] == "no" else "yes"
            if r["question_id"] in answers:
                pred = pope_parse(answers[r["question_id"]])
            else:
                pred = "yes" if label == "no" else "no"  # missing answer: always wrong
            preds, labels = per_split.setdefault(r["split"], ([], []))
            preds.append(pred)
            labels.append(label)
        splits = {s: binary_metrics(p, g) for s, (p, g) in per_split.items()}
        out: Metrics = {}
        for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            out[key] = sum(m[key] for m in splits.values()) / len(splits) if splits else 0.0
        out["per_split"] = splits
        out["num_questions"] = sum(m["num_questions"] for m in splits.values())
        return out
