"""The whisper encoder-output cache: each clip's frames as the encoder gives them alone, resumable, keyed by encoder and variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemeta import encoder_cache
from edgemeta.corpus import Utterance
from edgemeta.encoder_cache import CLEAN, cached_encoder_outputs, encoder_id, variant_names
from edgemeta.model import ModelConfig, SpeechRecognizer
from test_meta_learning import single_thread  # noqa: F401 (autouse: one torch thread)

# A random tiny encoder: no weights package needed.
TINY_WHISPER = dict(body="whisper-tiny.en", whisper={"width": 64, "heads": 2, "layers": 2}, gru_hidden=32)
# fp16 keeps 11 significant bits (relative error <= 2**-11 ~ 4.9e-4 on normal numbers); the padded batch adds ~1e-6.
FP16_RTOL, FP16_ATOL = 1e-3, 1e-4


def tiny_whisper(seed: int = 0, **overrides) -> SpeechRecognizer:
    torch.manual_seed(seed)
    model = SpeechRecognizer(ModelConfig(**{**TINY_WHISPER, **overrides})).eval()
    torch.nn.init.normal_(model.whisper.encoder.positions, std=0.1)  # a fresh buffer is zeros: make positions matter
    return model


def noise_clips(count: int = 5, seed: int = 0) -> list[Utterance]:
    """Clips of 0.4-1.2 s (different lengths, so batches are padded)."""
    rng = np.random.default_rng(seed)
    return [Utterance((0.1 * rng.standard_normal(6400 + 3200 * i)).astype(np.float32), "a b", "s", f"/corpus/{seed}/{i}.wav")
            for i in range(count)]


def test_cached_frames_are_each_clips_alone_outputs(tmp_path):
    model, clips = tiny_whisper(), noise_clips()
    cached = cached_encoder_outputs(model, clips, augmented_variants=1, progress=False, root=tmp_path)
    assert cached.variants == (CLEAN, "augment1-1")
    with torch.no_grad():
        for i, clip in enumerate(clips):
            alone = model.acoustic_features(torch.from_numpy(clip.audio)[None])[0]
            assert cached.frames[0][i].dtype == torch.float16
            torch.testing.assert_close(cached.frames[0][i].float(), alone, rtol=FP16_RTOL, atol=FP16_ATOL)
            augmented = encoder_cache.variant_audio(clip, encoder_cache.clip_key(clip), "augment1-1")
            alone = model.acoustic_features(torch.from_numpy(augmented)[None])[0]
            torch.testing.assert_close(cached.frames[1][i].float(), alone, rtol=FP16_RTOL, atol=FP16_ATOL)
    features, lengths = cached.batch([0, 4], [0, 1])
    assert lengths.tolist() == [len(cached.frames[0][0]), len(cached.frames[1][4])] and features.dtype == torch.float32


def test_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    model, clips = tiny_whisper(), noise_clips()
    monkeypatch.setattr(encoder_cache, "CHUNK_CLIPS", 2)
    encode, encoded = encoder_cache._encode, []

    def interrupted(model, audios, batch_seconds):
        if encoded:
            raise KeyboardInterrupt
        encoded.append(len(audios))
        return encode(model, audios, batch_seconds)

    monkeypatch.setattr(encoder_cache, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cached_encoder_outputs(model, clips, progress=False, root=tmp_path)
    monkeypatch.setattr(encoder_cache, "_encode", lambda model, audios, batch_seconds: encoded.append(len(audios)) or encode(model, audios, batch_seconds))
    resumed = cached_encoder_outputs(model, clips, progress=False, root=tmp_path)
    assert encoded == [2, 2, 1]  # the first chunk was kept; only the three clips after it were encoded
    monkeypatch.setattr(encoder_cache, "_encode", None)  # everything is cached now: the encoder is not needed
    again = cached_encoder_outputs(model, clips, progress=False, root=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(resumed.frames[0], again.frames[0]))


def test_keys_separate_encoders_and_variants(tmp_path):
    clips = noise_clips(2)
    model, other = tiny_whisper(0), tiny_whisper(1)
    assert encoder_id(model) == encoder_id(tiny_whisper(0)) != encoder_id(other)
    ours = cached_encoder_outputs(model, clips, augmented_variants=2, progress=False, root=tmp_path)
    theirs = cached_encoder_outputs(other, clips, progress=False, root=tmp_path)
    assert not torch.equal(ours.frames[0][0], theirs.frames[0][0])
    assert sorted(p.name for p in (tmp_path / encoder_id(model)).iterdir()) == sorted(variant_names(2))
    assert not torch.equal(ours.frames[1][0], ours.frames[2][0])  # two draws, not one augmentation twice
    # Another clip at the same path is another clip: its samples are part of its key.
    moved = [Utterance(clips[1].audio, "a b", "s", clips[0].source)]
    assert encoder_cache.clip_key(moved[0]) != encoder_cache.clip_key(clips[0])


def test_a_model_that_trains_its_last_block_caches_the_frozen_blocks_output(tmp_path):
    frozen, trains_last = tiny_whisper(0), tiny_whisper(0, train_encoder_blocks=1)
    assert encoder_id(trains_last) != encoder_id(frozen)
    with torch.no_grad():  # the trained block is not part of the id; the frozen block is
        trains_last.whisper.encoder.blocks[1].ffn[0].weight.add_(1.0)
        same_id = encoder_id(trains_last)
        trains_last.whisper.encoder.blocks[0].ffn[0].weight.add_(1.0)
        assert encoder_id(tiny_whisper(0, train_encoder_blocks=1)) == same_id != encoder_id(trains_last)
    clips = noise_clips(3)
    model = tiny_whisper(0, train_encoder_blocks=1)
    cached = cached_encoder_outputs(model, clips, progress=False, root=tmp_path)
    with torch.no_grad():
        for i, clip in enumerate(clips):
            mel, mel_lengths = model.whisper.frontend(torch.from_numpy(clip.audio)[None], torch.tensor([len(clip.audio)]))
            first_block = model.whisper.encoder(mel, mel_lengths, blocks=1)[0][0]
            torch.testing.assert_close(cached.frames[0][i].float(), first_block, rtol=FP16_RTOL, atol=FP16_ATOL)


def test_longer_than_a_segment_is_left_out(tmp_path):
    short_positions = tiny_whisper(whisper={**TINY_WHISPER["whisper"], "max_frames": 25})  # 25 frames: 0.5 s segments
    assert short_positions.config.max_segment_seconds == 0.5
    cached = cached_encoder_outputs(short_positions, noise_clips(3), progress=False, root=tmp_path)
    assert [f is None for f in cached.frames[0]] == [False, True, True]


def test_real_clips_through_the_packaged_encoder(tmp_path):
    """Three speechocean762 clips through whisper tiny.en: cached outputs match each clip encoded alone."""
    from conftest import shared_data, skip_or_fail
    from edgemeta.bodies.whisper_weights import WeightsError
    from edgemeta.corpus import load_corpus
    from edgemeta.model import new_model

    clips = load_corpus(shared_data("speechocean762-train"), progress=False)[:3]
    try:
        model = new_model(ModelConfig(body="whisper-tiny.en")).eval()
    except WeightsError as error:
        skip_or_fail(str(error))
    cached = cached_encoder_outputs(model, clips, progress=False, root=tmp_path)
    with torch.no_grad():
        for clip, frames in zip(clips, cached.frames[0]):
            alone = model.acoustic_features(torch.from_numpy(clip.audio)[None])[0]
            torch.testing.assert_close(frames.float(), alone, rtol=FP16_RTOL, atol=FP16_ATOL)
