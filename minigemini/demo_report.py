"""The demo's results: a markdown table, `results.json`, and a figure (loss curves + accuracy bars with chance
levels) as `demo_results.png` and `demo_results.svg`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROWS = [("detail", "detail questions (HR needed)"), ("detail_color", "  tiny-dot colour"),
        ("detail_count", "  tiny-dot count"), ("control", "control questions (LR suffices)"),
        ("control_color", "  big-shape colour"), ("control_shape", "  big-shape kind")]


def results_table(scores: dict[str, dict[str, float]], chance: dict[str, float]) -> str:
    """Markdown table: one row per question type / task, one column per model, plus chance level."""
    names = list(scores)
    lines = ["| held-out accuracy (%) | " + " | ".join(names) + " | chance |",
             "| --- | " + " | ".join("---:" for _ in names) + " | ---: |"]
    for key, label in ROWS:
        cells = [f"{scores[n].get(key, float('nan')):.1f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {chance.get(key, float('nan')):.1f} |")
    return "\n".join(lines)


def chance_levels(meta: dict[str, Any]) -> dict[str, float]:
    """Accuracy of guessing uniformly within each task's answer set (from the data set's meta.json)."""
    sets = meta.get("task_vocabulary", {})
    out = {task: 100.0 / len(answers) for task, answers in sets.items() if isinstance(answers, list) and answers}
    for qtype in ("detail", "control"):
        tasks = [v for k, v in out.items() if k.startswith(qtype + "_")]
        if tasks:
            out[qtype] = sum(tasks) / len(tasks)
    return out


def write_report(out: Path, scores: dict[str, dict[str, float]], curves: dict[str, dict[str, dict[int, float]]],
                 timings: dict[str, float], total_seconds: float, settings: Any, data_meta: dict[str, Any]) -> dict:
    """Write results.json, results.md and demo_results.png into `out`; return the results dict."""
    chance = chance_levels(data_meta)
    table = results_table(scores, chance)
    footer = ("\ntraining wall time (both stages + feature cache): "
              + ", ".join(f"{n} {t / 60:.1f} min" for n, t in timings.items())
              + f"; whole demo (data, base model, training, evaluation) {total_seconds / 60:.1f} min")
    results = {"scores": scores, "chance": chance, "train_seconds": timings, "total_seconds": total_seconds,
               "losses": {n: {st: {str(k): v for k, v in c.items()} for st, c in per.items()} for n, per in curves.items()},
               "settings": {k: str(v) for k, v in asdict(settings).items()}, "table": table + footer}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table + "\n" + footer + "\n")
    plot(out / "demo_results.png", scores, curves, chance)
    return results


PLOT_LABELS = {"detail_color": "tiny-dot colour\n(HR needed)", "detail_count": "tiny-dot count\n(HR needed)",
               "control_color": "big-shape colour\n(LR suffices)", "control_shape": "big-shape kind\n(LR suffices)"}


def plot(path: Path, scores: dict[str, dict[str, float]], curves: dict[str, dict[str, dict[int, float]]],
         chance: dict[str, float] | None = None) -> None:
    """Left: training loss of both models over both stages; right: accuracy per task with its chance level.
    Written as `path` (PNG) and the same name with `.svg`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # SVG text stays text (searchable, editable)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.8))
    _plot_losses(ax_loss, curves)
    keys = list(PLOT_LABELS)
    width = 0.8 / max(1, len(scores))
    for i, (name, sc) in enumerate(scores.items()):
        ax_acc.bar([j + i * width for j in range(len(keys))], [sc.get(k, 0.0) for k in keys], width, label=name)
    for j, key in enumerate(keys):  # chance: a dashed segment across each task's bars
        if chance and key in chance:
            ax_acc.hlines(chance[key], j - width / 2, j + width * (len(scores) - 0.5), colors="black",
                          linestyles="--", lw=1.2, label="chance" if j == 0 else None)
    ax_acc.set_xticks([j + width * (len(scores) - 1) / 2 for j in range(len(keys))], [PLOT_LABELS[k] for k in keys])
    ax_acc.set(title="held-out accuracy per question kind", ylabel="exact-match accuracy (%)", ylim=(0, 118),
               yticks=range(0, 101, 20))
    ax_acc.legend(loc="upper center", ncol=len(scores) + 1, fontsize=9)  # above the 100 % line
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.savefig(Path(path).with_suffix(".svg"))
    plt.close(fig)


def _plot_losses(ax: Any, curves: dict[str, dict[str, dict[int, float]]]) -> None:
    """Both stages on one step axis, a dotted line where stage 2 starts."""
    for name, per_stage in curves.items():
        offset = 0
        xs, ys = [], []
        for stage in ("pretrain", "finetune"):
            steps = sorted(per_stage.get(stage, {}))
            xs += [offset + s for s in steps]
            ys += [per_stage[stage][s] for s in steps]
            if stage == "pretrain" and steps:
                offset += steps[-1]
                ax.axvline(offset, color="grey", lw=0.8, ls=":")
        ax.plot(xs, ys, label=name)
    from matplotlib.ticker import FormatStrFormatter

    ax.set(title="training loss (stage 1: captions | stage 2: questions)", xlabel="optimizer step",
           ylabel="cross-entropy per answer token (nats, log scale)", yscale="log")
    for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_format(FormatStrFormatter("%.3g"))  # plain numbers, not 6.3 x 10^0
    ax.legend(fontsize=9)
