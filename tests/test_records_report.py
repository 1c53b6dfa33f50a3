"""``edgemeta eval --from-records``: saved records re-summarized for a split's speakers and unseen voices only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemeta.checkpoint import save_checkpoint
from edgemeta.cli import main
from edgemeta.splits import SPEECHOCEAN

DEV, TEST_1, TEST_2 = "so762-0001", "so762-0056", "so762-1027"  # the committed split's first dev and first two test speakers
SEEN, UNSEEN = "espeak-en-us+m3-p40-s160", "espeak-en-029+max-p65-s150"  # variant m3 trained the model below; max did not
# seed-mean CER by (dataset, model, method, k, speaker): per-seed values (seed 0, seed 1)
CER = {
    (SPEECHOCEAN, "pretrained", "none", 0): {TEST_1: (0.40, 0.40), TEST_2: (0.50, 0.50), DEV: (0.10, 0.10)},
    (SPEECHOCEAN, "meta-sgd", "none", 0): {TEST_1: (0.45, 0.45), TEST_2: (0.50, 0.50), DEV: (0.10, 0.10)},
    (SPEECHOCEAN, "meta-sgd", "meta-sgd", 10): {TEST_1: (0.42, 0.44), TEST_2: (0.48, 0.50), DEV: (0.30, 0.30)},
    ("eval-espeak", "pretrained", "none", 0): {SEEN: (0.90, 0.90), UNSEEN: (0.30, 0.30)},
    ("eval-espeak", "meta-sgd", "none", 0): {SEEN: (0.90, 0.90), UNSEEN: (0.30, 0.30)},
    ("eval-espeak", "meta-sgd", "meta-sgd", 10): {SEEN: (0.10, 0.10), UNSEEN: (0.32, 0.36)},
}
GUARD = {TEST_1: (True, False), TEST_2: (True, True), DEV: (False, False), SEEN: (False, False), UNSEEN: (True, True)}


@pytest.fixture
def saved_run(tmp_path: Path) -> Path:
    """A hand-built ``edgemeta eval`` output: records, and a summary with clip lists, enrollments and notes."""
    records, enrollments, datasets = [], [], {}
    for (dataset, model, method, k), by_speaker in CER.items():
        for speaker, cers in by_speaker.items():
            datasets.setdefault(dataset, {"manifest": f"{dataset}/manifest.jsonl", "speakers": {}})["speakers"][speaker] = {"clips": 20}
            for seed, cer in enumerate(cers):
                records.append({"dataset": dataset, "model": model, "method": method, "k": k, "speaker": speaker,
                                "seed": seed, "cer": cer, "wer": 2 * cer})
                if k:
                    enrollments.append({"dataset": dataset, "model": model, "method": method, "k": k, "speaker": speaker, "seed": seed,
                                        "adapted": GUARD[speaker][seed], "guard_accepted": GUARD[speaker][seed],
                                        "guard_rule": "5-fold over 10 clips", "clips_left_out": 0, "seconds": 1.0})
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in records))
    old.with_suffix(".summary.json").write_text(json.dumps({
        "models": {"pretrained": {}, "meta-sgd": {}}, "methods": [], "k": [0, 10], "seeds": 2, "guard": True,
        "datasets": datasets, "enrollments": enrollments, "seconds": {"evaluation": 9.0},
        "notes": [f"{SPEECHOCEAN}: only the 16 dev speakers of the committed split are scored", "model meta-sgd decodes best-path"],
    }))
    return old


@pytest.fixture
def trained_on_m3(tmp_path: Path) -> Path:
    """A checkpoint that records one espeak-ng training speaker, of variant m3."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"training_speakers": ["espeak-en-gb+m3-p70-s130", "so762-0002"]})
    return path


def rows_of(out: Path) -> dict[tuple[str, str, str, int], dict]:
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    return {(r["dataset"], r["model"], r["method"], r["k"]): r for r in summary["rows"]}


def test_test_speakers_and_unseen_voices_only_worse_against_the_pretrained_k0(saved_run: Path, trained_on_m3: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "new.jsonl"
    assert main(["eval", "--from-records", str(saved_run), "--unseen-by", str(trained_on_m3), "--json", str(out)]) == 0
    rows = rows_of(out)
    pretrained = rows[SPEECHOCEAN, "pretrained", "none", 0]
    assert pretrained["speakers"] == 2 and pretrained["cer_mean"] == pytest.approx(0.45)  # the dev speaker's 0.10 left out
    adapted = rows[SPEECHOCEAN, "meta-sgd", "meta-sgd", 10]
    assert adapted["cer_mean"] == pytest.approx((0.43 + 0.49) / 2)
    # TEST_1: 0.43 > 0.40 + 0.01 (the pretrained k=0), though below meta-sgd's own k=0 (0.45); TEST_2: 0.49 < 0.51
    assert adapted["worse"] == pytest.approx(0.5) and adapted["worse_draws"] == pytest.approx(0.5)
    assert adapted["guard_acceptance"] == pytest.approx(0.75)  # three of the test speakers' four enrollments
    espeak = rows["eval-espeak", "meta-sgd", "meta-sgd", 10]
    assert espeak["speakers"] == 1 and espeak["cer_mean"] == pytest.approx(0.34) and espeak["worse"] == pytest.approx(1.0)
    assert {json.loads(line)["speaker"] for line in out.read_text().splitlines()} == {TEST_1, TEST_2, UNSEEN}

    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["split"] == "test" and summary["worse_baseline"] == "pretrained k=0"
    assert set(summary["datasets"][SPEECHOCEAN]["speakers"]) == {TEST_1, TEST_2}
    assert {e["speaker"] for e in summary["enrollments"]} == {TEST_1, TEST_2, UNSEEN}
    notes = summary["notes"]
    assert any(n.startswith(f"{SPEECHOCEAN}: only the 2 test speakers") for n in notes)
    assert not any("16 dev speakers" in n for n in notes) and "model meta-sgd decodes best-path" in notes
    assert any(SEEN in n and "1 of 2 espeak-ng speakers dropped" in n for n in notes)
    assert summary["source"]["records"] == str(saved_run) and summary["source"]["seconds"] == {"evaluation": 9.0}
    stamp = summary["provenance"]
    assert {"command", "started_utc", "finished_utc", "load_average_start", "load_average_end", "machine", "git", "packages"} <= set(stamp)
    assert stamp["machine"]["cores"] >= 1 and stamp["packages"]["onnxruntime"] and len(stamp["git"]["commit"] or "0" * 40) == 40
    report = out.with_suffix(".md").read_text()
    assert "pretrained's k=0" in report and f"dropped, their variant used by a training speaker (not unseen): {SEEN}" in report
    assert out.with_suffix(".png").stat().st_size > 0


def test_dev_split_keeps_the_dev_speakers(saved_run: Path, trained_on_m3: Path, tmp_path: Path) -> None:
    out = tmp_path / "dev.jsonl"
    assert main(["eval", "--from-records", str(saved_run), "--unseen-by", str(trained_on_m3), "--split", "dev", "--json", str(out)]) == 0
    adapted = rows_of(out)[SPEECHOCEAN, "meta-sgd", "meta-sgd", 10]
    assert adapted["speakers"] == 1 and adapted["cer_mean"] == pytest.approx(0.30) and adapted["worse"] == pytest.approx(1.0)
    assert adapted["guard_acceptance"] == pytest.approx(0.0)


def test_missing_summary_and_manifests_beside_records_are_clear_errors(saved_run: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "new.jsonl")
    assert main(["eval", "--from-records", str(saved_run), "--manifest", "m.jsonl", "--json", out]) == 1
    assert "--from-records runs nothing" in capsys.readouterr().err
    saved_run.with_suffix(".summary.json").unlink()
    assert main(["eval", "--from-records", str(saved_run), "--json", out]) == 1
    assert f"{saved_run.with_suffix('.summary.json')} not found" in capsys.readouterr().err
    assert main(["eval", "--json", out]) == 1
    assert "give --manifest" in capsys.readouterr().err
