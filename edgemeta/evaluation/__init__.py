"""``edgemeta eval``: k-shot speaker adaptation measured per speaker, for every model and method.

Modules: :mod:`.datasets` (scored sets and adaptation pools), :mod:`.models`
(checkpoints and bundles behind one interface), :mod:`.method_plans` (which
model and rates each method uses), :mod:`.adaptation_runs` (the loop and its
records), :mod:`.summary` (rows across speakers), :mod:`.report` (table, plot,
output files), :mod:`.saved_records` (an earlier run's records re-summarized,
``--from-records``) and :mod:`.command` (the command line).

Protocol (DESIGN.md, "Evaluation protocol"):

- **Scored set.** Each speaker's clips are ranked by the sha256 of
  ``speaker/clip`` (the clip's path relative to its manifest): a fixed,
  seed-independent shuffle. The last ``min(10, clips // 2)`` are the speaker's
  scored set, identical across k, methods, models and seeds; the rest are the
  adaptation pool (20 clips: 10 scored, k <= 10; 500 clips: 10 scored, k up
  to 490). A speaker's CER is Σ edits / Σ reference characters over its scored
  clips (:func:`edgemeta.runtime.metrics.score`). In speechocean762-train
  only the committed split's test speakers are scored (``--split dev``: its
  dev speakers, for choices; the rest trained the models); any scored
  speaker in a model's training speakers is warned about.
- **Adaptation clips.** Seed ``s`` ranks the pool by the sha256 of
  ``s/speaker/clip``; k-shot adaptation uses the first k, so a seed's clips
  are nested across k and the same for every method. A k larger than a
  speaker's pool is skipped for that speaker, with a note.
- **Methods.** ``none`` is every model's k=0 (reported for every model given,
  and the baseline of "worse"). Each adaptive method uses the model trained
  for it, with that model's rates (Meta-SGD's λ, MAML/FOMAML/Reptile's α).
  ``finetune`` is the pretrained weights with the scalar rate chosen on the
  dev speakers: the ``finetune`` model (``edgemeta meta-train --method
  finetune``) or, without one, the ``pretrained`` model with its stored
  scalar rate. The controls of DESIGN.md, opt-in names beyond the contract's:
  ``ctc-control`` (the model ``--model ctc-control=PATH`` of ``edgemeta
  meta-train --method ctc-control``, adapted with its scalar rate; evaluated
  by default when that model is given) and ``meta-sgd-scalar`` (the Meta-SGD
  model's init adapted with one scalar rate instead of λ: its own stored
  scalar rate, else the fine-tuning rate; only when ``--methods`` names it).
- **Paths.** A bundle is adapted by the runtime's :class:`Adapter` and scored
  with onnxruntime, as the device does: with ``--guard`` the clip checks and
  the guard decide (a refused head scores as the base head), without it the
  adaptation is raw. A checkpoint is adapted with
  :func:`edgemeta.meta_learning.adapt_head` in PyTorch (no guard); its scored
  clips' body features are computed once per speaker.
- **Reported.** One JSON line per dataset, model, method, k, speaker and seed
  (k=0 lines repeat for every seed: no clip is drawn); a Markdown table per
  dataset × model/method × k (mean CER, spread across speakers of the
  seed-mean CER, mean WER, fraction of speakers made worse: seed-mean CER
  after > the pretrained model's CER at k=0 + 0.01, one baseline for every
  method, the guard's acceptance rate);
  a PNG plot of CER against k; everything else (clip lists, guard rules and
  decisions, rates used, notes, timings) in ``OUT.summary.json``.
"""

from __future__ import annotations


class EvalError(ValueError):
    """Inputs ``edgemeta eval`` cannot use; the message names the file or option and the problem."""
