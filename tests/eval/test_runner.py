"""`minigemini eval` end to end on the tiny model and a POPE fixture in the official layout; resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from minigemini.eval.runner import PREDICTIONS_FILE, evaluate

QUESTIONS = {  # split -> (image, question, label)
    "random": [("COCO_val2014_000000000001.png", "Is there a dog in the image?", "yes"),
               ("COCO_val2014_000000000002.png", "Is there a car in the image?", "no")],
    "popular": [("COCO_val2014_000000000001.png", "Is there a chair in the image?", "no")],
    "adversarial": [("COCO_val2014_000000000002.png", "Is there a person in the image?", "yes"),
                    ("COCO_val2014_000000000001.png", "Is there a bench in the image?", "no")],
}
NUM_ITEMS = sum(len(v) for v in QUESTIONS.values())


@pytest.fixture()
def pope_dir(tmp_path: Path) -> Path:
    """POPE as released (coco/coco_pope_<split>.json label files, JSON lines) + val2014 images."""
    root = tmp_path / "pope"
    (root / "coco").mkdir(parents=True)
    (root / "val2014").mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)], 1):
        Image.new("RGB", (48 + 16 * i, 40), colour).save(root / "val2014" / f"COCO_val2014_00000000000{i}.png")
    for split, rows in QUESTIONS.items():
        lines = [json.dumps({"question_id": i + 1, "image": im, "text": q, "label": lab})
                 for i, (im, q, lab) in enumerate(rows)]
        (root / "coco" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
    return root


class CountingGenerator:
    """Wraps a Generator and records every question it is asked to answer."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.prompts: list[str] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, images=None, options=None):
        self.prompts.extend(prompts)
        return self.inner.generate(prompts, images, options)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_cli_end_to_end(tiny_model_dir, pope_dir, tmp_path, capsys):
    from minigemini.cli import main

    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "pope", "--data-dir", str(pope_dir),
                 "--out", str(out), "--batch-size", "3", "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("## pope")
    assert "| accuracy |" in printed and "| accuracy |" in (out / "results.md").read_text()
    assert results["meta"]["num_answered"] == NUM_ITEMS and results["meta"]["num_missing"] == 0
    assert results["meta"]["generation"]["num_generated"] == NUM_ITEMS
    assert set(results["per_split"]) == set(QUESTIONS) and 0.0 <= results["accuracy"] <= 100.0
    lines = _lines(out / PREDICTIONS_FILE)
    assert len(lines) == NUM_ITEMS and {"question_id", "text", "prompt", "model_id"} <= set(lines[0])
    assert lines[0]["prompt"].startswith("<image>\n") and lines[0]["model_id"] == tiny_model_dir.name


def test_resume_generates_only_missing_answers(tiny_model, tiny_processor, pope_dir, tmp_path):
    from minigemini.infer.generate import Generator

    generator = CountingGenerator(Generator(tiny_model, tiny_processor))
    out = tmp_path / "run"
    first = evaluate(generator, "pope", pope_dir, out, batch_size=2, limit=2, progress=False)
    assert len(generator.prompts) == 2 and first["meta"]["num_missing"] == NUM_ITEMS - 2
    assert (first["meta"]["num_scored"], first["meta"]["num_total"]) == (2, NUM_ITEMS)  # --limit: answered only
    assert first["meta"]["note"].startswith(f"score over 2 of {NUM_ITEMS} questions")
    path = out / PREDICTIONS_FILE
    kept = path.read_bytes()
    with open(path, "ab") as f:  # an interrupted run leaves a half-written line behind
        f.write(b'{"question_id": "random_9", "te')

    generator.prompts.clear()
    second = evaluate(generator, "pope", pope_dir, out, batch_size=2, progress=False)
    assert len(generator.prompts) == NUM_ITEMS - 2  # done items are not recomputed
    assert path.read_bytes().startswith(kept)  # earlier lines untouched; the torn line is gone
    lines = _lines(path)
    assert len(lines) == NUM_ITEMS and len({str(r["question_id"]) for r in lines}) == NUM_ITEMS
    gen = second["meta"]["generation"]
    assert (gen["num_already_answered"], gen["num_generated"], gen["torn_line_removed"]) == (2, NUM_ITEMS - 2, True)
    assert second["meta"]["num_missing"] == 0 and "note" not in second["meta"]

    generator.prompts.clear()
    third = evaluate(generator, "pope", pope_dir, out, batch_size=2, progress=False)
    assert generator.prompts == [] and third["accuracy"] == second["accuracy"]

    fresh = evaluate(generator, "pope", pope_dir, tmp_path / "fresh", batch_size=4, progress=False)
    assert {r["question_id"]: r["text"] for r in _lines(tmp_path / "fresh" / PREDICTIONS_FILE)} == \
        {r["question_id"]: r["text"] for r in lines}  # resuming gives the answers a single run gives


def test_score_existing_predictions_without_a_model(pope_dir, tmp_path, monkeypatch, capsys):
    from minigemini.cli import main
    from minigemini.infer import generate

    def no_model(*args, **kwargs):
        raise AssertionError("scoring a predictions file must not load a model")

    monkeypatch.setattr(generate.Generator, "from_pretrained", no_model)
    preds = tmp_path / "answers" / "pope_answers.jsonl"
    preds.parent.mkdir()
    rows = [{"question_id": f"{split}_{i + 1}", "text": "Yes." if lab == "yes" else "No, there is not."}
            for split, items in QUESTIONS.items() for i, (_, _, lab) in enumerate(items)]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--benchmark", "pope", "--data-dir", str(pope_dir), "--predictions", str(preds)]) == 0
    results = json.loads((preds.parent / "results.json").read_text())
    assert results["accuracy"] == 100.0 and results["meta"]["num_missing"] == 0
    assert "| accuracy | 100.00 |" in capsys.readouterr().out


def test_eval_needs_model_or_predictions(pope_dir):
    from minigemini.cli import main

    with pytest.raises(SystemExit, match="--model"):
        main(["eval", "--benchmark", "pope", "--data-dir", str(pope_dir)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(None, "pope", pope_dir, pope_dir / "out", predictions=pope_dir / "none.jsonl")
