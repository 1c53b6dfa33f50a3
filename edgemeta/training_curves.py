"""The meta-training run's curves (losses, dev CER, learned rates) as a PNG, from its ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_curves(metrics_path: Path, png_path: Path) -> None:
    """Query loss, dev CER (k=0 and adapted) and λ medians against meta-steps, from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in records if "loss" in r]
    for key, label in (("support_before", "support, before"), ("support_after", "support, adapted"), ("loss", "query, adapted")):
        axes[0].plot(steps, [r[key] for r in records if "loss" in r], label=label)
    axes[0].set(xlabel="meta-step", ylabel="CTC loss", title="training loss")
    dev = [r for r in records if "dev_cer" in r]
    axes[1].plot([r["step"] for r in dev], [r["dev_cer_k0"] for r in dev], "o-", label="k=0")
    axes[1].plot([r["step"] for r in dev], [r["dev_cer"] for r in dev], "o-", label="adapted")
    axes[1].set(xlabel="meta-step", ylabel="CER", title="dev speakers")
    with_rates = [r for r in records if r.get("rates")]
    for name in with_rates[0]["rates"] if with_rates else []:
        axes[2].plot([r["step"] for r in with_rates], [r["rates"][name][1] for r in with_rates], label=name)
    axes[2].set(xlabel="meta-step", ylabel="median λ", title="learned rates", yscale="log" if with_rates else "linear")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
