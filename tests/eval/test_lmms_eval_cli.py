"""`python -m lmms_eval --model minigemini ...` end to end, with the REAL lmms-eval 0.7.x.

Two local tasks (YAML + JSON-lines data + images in tmp_path, read through `datasets`' json loader,
nothing downloaded): a generate_until task whose answers must equal `Generator.generate`, and a
multiple_choice task whose pick must be the option the model finds likeliest, computed here
independently with the model's own training loss. A bad model path must end the run non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval", reason="lmms-eval is the `eval` extra (make test installs it)")

from minigemini.data.templates import tokenize_conversation  # noqa: E402
from minigemini.infer.generate import GenerationOptions, Generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

UTILS = '''
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(path).convert("RGB") for path in doc["images"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_gen(doc, results):
    return {"exact": float(results[0].strip() == doc["answer"])}
'''

GEN_YAML = '''task: mg_local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function mg_local_utils.doc_to_visual
doc_to_text: !function mg_local_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 6
  until: ["###"]
  temperature: 0
  do_sample: false
process_results: !function mg_local_utils.process_gen
metric_list:
  - metric: exact
    aggregation: mean
    higher_is_better: true
'''

MC_YAML = '''task: mg_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: !function mg_local_utils.doc_to_visual
doc_to_text: !function mg_local_utils.doc_to_text
doc_to_target: gold
doc_to_choice: choices
metric_list:
  - metric: acc
'''

GEN_DOCS = [("What is in the picture?", 1), ("Colour?", 1), ("Describe both pictures in a few words, please.", 2),
            ("Say something about the weather.", 0)]
MC_DOCS = [("Which colour is the square?", ["red", "green", "blue"]), ("Is it big?", ["yes", "no", "maybe"]),
           ("How many dots?", ["one", "two", "three"]), ("Which shape?", ["circle", "square", "star"])]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _images(folder: Path, n: int, seed: int) -> list[str]:
    paths = []
    for k in range(n):
        path = folder / f"img{seed}_{k}.png"
        Image.new("RGB", (32 + 8 * k, 40), ((60 * seed) % 256, 90 * k, 200)).save(path)
        paths.append(str(path))
    return paths


def _loss(model, processor, template: str, question: str, answer: str, images: list[str]) -> float:
    """The model's training loss for `answer` after `question` (what lmms-eval's llava returns)."""
    ids, labels = tokenize_conversation([{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
                                        template, processor)
    pixels = processor.preprocess_images(images) if images else {}
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), **pixels).loss)


def _run_lmms_eval(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "lmms_eval", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def _samples(out: Path, task: str) -> list[dict]:
    files = sorted(out.rglob(f"*samples_{task}*.jsonl"))
    assert files, f"no samples file for {task} under {out}"
    rows = [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


@pytest.mark.slow  # a subprocess: lmms-eval indexes its ~200 task folders first (about a minute here)
def test_lmms_eval_runs_generate_until_and_multiple_choice(tmp_path, tiny_model, tiny_processor, tiny_model_dir):
    generator = Generator(tiny_model, tiny_processor)
    template = generator.template_name
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mg_local_utils.py").write_text(UTILS)
    gen_rows = [{"question": q, "images": _images(tmp_path, n, i), "answer": "x"} for i, (q, n) in enumerate(GEN_DOCS)]
    expected = [generator.generate([generator.question_prompt("<image>\n" * len(r["images"]) + r["question"])],
                                   [r["images"]], GenerationOptions(max_new_tokens=6, stop_strings=("###",)))[0]
                for r in gen_rows]
    mc_rows, losses = [], []
    for i, (question, choices) in enumerate(MC_DOCS):
        images = _images(tmp_path, 1, 10 + i)
        doc_losses = [_loss(tiny_model, tiny_processor, template, "<image>\n" + question, " " + c, images)
                      for c in choices]
        best = min(range(len(choices)), key=doc_losses.__getitem__)  # highest mean log-likelihood
        shift = (best - i) % len(choices)  # rotate so the likeliest option sits at index i % n: no position bias
        choices, doc_losses = choices[shift:] + choices[:shift], doc_losses[shift:] + doc_losses[:shift]
        mc_rows.append({"question": question, "images": images, "choices": choices, "gold": i % len(choices)})
        losses.append(doc_losses)
    assert len({len(set(d)) for d in losses}) == 1 and all(len(set(d)) == 3 for d in losses)
    (tasks / "mg_local_gen.yaml").write_text(GEN_YAML.format(data=_write_jsonl(tmp_path / "gen.jsonl", gen_rows)))
    (tasks / "mg_local_mc.yaml").write_text(MC_YAML.format(data=_write_jsonl(tmp_path / "mc.jsonl", mc_rows)))

    out = tmp_path / "out"
    proc = _run_lmms_eval(["--model", "minigemini", "--model_args", f"pretrained={tiny_model_dir},batch_size=2",
                           "--tasks", "mg_local_gen,mg_local_mc", "--include_path", str(tasks),
                           "--output_path", str(out), "--log_samples"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Error during evaluation" not in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]

    gen = _samples(out, "mg_local_gen")
    assert [r["filtered_resps"] for r in gen] == expected and any(expected)
    mc = _samples(out, "mg_local_mc")
    assert [r["acc"] for r in mc] == [1.0] * len(MC_DOCS)  # argmin(loss) = the likeliest option, every time
    for row, doc_losses in zip(mc, losses):
        got = [float(resp[0]) for resp in row["filtered_resps"]]  # the samples log writes them as text
        assert got == pytest.approx(doc_losses, rel=1e-4)
    results = json.loads(sorted(out.rglob("*results.json"))[-1].read_text())["results"]
    assert results["mg_local_mc"]["acc,none"] == 1.0


@pytest.mark.slow
def test_lmms_eval_exits_nonzero_when_the_model_cannot_load(tmp_path):
    proc = _run_lmms_eval(["--model", "minigemini", "--model_args", f"pretrained={tmp_path / 'missing'},batch_size=1",
                           "--tasks", "mme"], tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "minigemini: cannot load model" in proc.stderr and "not a minigemini model folder" in proc.stderr
