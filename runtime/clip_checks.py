"""Checks an enrollment clip must pass before it may adapt a user's head.

Each check returns ``None`` for a usable clip or a sentence saying what is
wrong; the adapter names the clip with that reason and leaves it out.

- **silence**: the loudest 50 ms of the clip is below ``SILENCE_DBFS``;
- **clipping**: more than ``CLIPPING_FRACTION`` of the samples sit at full
  scale (``|x| >= CLIPPING_LEVEL``; resampling keeps clipped plateaus near or
  above full scale, so this holds at the model's rate as at the file's own);
- **transcript too long**: CTC needs one frame per character plus one per
  repeated pair; fewer frames cannot align;
- **transcript mismatch**: a likelihood-ratio test of the CTC alignment. The
  score is ``(log p_model(text | audio) - log p_blind(text | audio)) / characters``,
  where the *character-blind* model keeps the model's blank probability on
  every frame (it knows when something is said) but spreads the rest evenly
  over the characters (it does not know what). It measures how much the
  model's character evidence supports the transcript: clearly positive when it
  matches, near 0 when the model has no evidence (random initialisation, a
  model that only emits blanks), negative when the audio says other
  characters. A transcript the evidence speaks against by more than
  ``MISMATCH_NATS_PER_CHAR`` nats per character is left out; a model that
  cannot judge leaves nothing out.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from edgemeta.runtime.ctc_loss import ctc_loss, min_frames
from edgemeta.runtime.text import BLANK_ID

SILENCE_DBFS = -50.0
CLIPPING_LEVEL = 0.99
CLIPPING_FRACTION = 0.001
MISMATCH_NATS_PER_CHAR = 2.0
LOUDNESS_WINDOW_SECONDS = 0.05


def peak_loudness_dbfs(audio: np.ndarray, sample_rate: int) -> float:
    """RMS level of the loudest 50 ms window of ``audio`` at ``sample_rate``, in dB relative to full scale."""
    audio = np.asarray(audio, dtype=np.float64)
    window = round(LOUDNESS_WINDOW_SECONDS * sample_rate)
    windows = len(audio) // window
    frames = audio[: windows * window].reshape(windows, -1) if windows else audio[None]
    rms = np.sqrt(np.mean(frames**2, axis=1)).max()
    return 20.0 * math.log10(max(rms, 1e-10))


def signal_problem(audio: np.ndarray, sample_rate: int) -> str | None:
    """Why ``audio`` at ``sample_rate`` cannot be used (silent or clipped), or ``None``."""
    level = peak_loudness_dbfs(audio, sample_rate)
    if level < SILENCE_DBFS:
        return f"silent (loudest 50 ms at {level:.1f} dBFS, below {SILENCE_DBFS:g} dBFS)"
    clipped = float(np.mean(np.abs(audio) >= CLIPPING_LEVEL))
    if clipped > CLIPPING_FRACTION:
        return f"clipped ({100 * clipped:.2f} % of samples at full scale, more than {100 * CLIPPING_FRACTION:g} %)"
    return None


def alignment_score(log_probs: np.ndarray | torch.Tensor, ids: list[int]) -> float:
    """Per-character log-likelihood ratio of ``ids`` under ``[frames, vocabulary]`` log-probs vs the character-blind model."""
    log_probs = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64)
    frames, vocabulary = log_probs.shape
    blank = log_probs[:, BLANK_ID : BLANK_ID + 1]
    spoken = torch.log(-torch.expm1(blank).clamp(max=-1e-12)) - math.log(vocabulary - 1)  # log((1 - p_blank) / (V - 1))
    blind = spoken.expand(frames, vocabulary).clone()
    blind[:, BLANK_ID] = blank[:, 0]
    both = torch.stack([log_probs, blind])  # [2, frames, vocabulary]
    nll = ctc_loss(both, torch.tensor([ids, ids], dtype=torch.long), torch.tensor([frames, frames]), torch.tensor([len(ids), len(ids)]), reduction="none")
    return float(nll[1] - nll[0])


def transcript_problem(log_probs: np.ndarray | torch.Tensor, ids: list[int]) -> str | None:
    """Why a transcript (token ids) does not fit the audio's log-probs, or ``None``."""
    if not ids:
        return "transcript is empty after normalisation"
    needed, frames = min_frames(ids), len(log_probs)
    if needed > frames:
        return f"transcript too long for the audio (needs {needed} frames, the audio gives {frames})"
    score = alignment_score(log_probs, ids)
    if score < -MISMATCH_NATS_PER_CHAR:
        return (
            f"transcript does not match the audio (CTC alignment score {score:.2f} nats/char, "
            f"below -{MISMATCH_NATS_PER_CHAR:g})"
        )
    return None
