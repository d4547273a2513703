"""Dynamic-SUPERB integration on locally generated instances in the Hub's exact parquet schema.

The instances are built from tiny generated tones (16 kHz wav bytes in ``audio`` structs
``{bytes, path}``), written in the three layouts users have: a Hub-layout folder, a single
parquet file and a ``datasets`` ``save_to_disk`` folder.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

import audio_gen

from audioembed.dsuperb.build_registry import build_entries, render
from audioembed.dsuperb.catalog import (DOMAINS, KINDS, Catalog, CatalogError, TaskEntry, infer_kind,
                                        packaged_registry_path)
from audioembed.dsuperb.commands import dsuperb_group
from audioembed.dsuperb.evaluate import pair_features
from audioembed.dsuperb.loader import InstanceError, locate_instance, materialize_audio, open_instance

SR = 16000
PITCH = {"low": 220.0, "mid": 660.0, "high": 1760.0}
AUDIO_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_FEATURES = {"info": {"features": {
    "file": {"dtype": "string", "_type": "Value"}, "audio": {"sampling_rate": SR, "_type": "Audio"},
    "instruction": {"dtype": "string", "_type": "Value"}, "label": {"dtype": "string", "_type": "Value"}}}}
CSV = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dynamic_superb" / "instances.csv")  # the organisers' list the registry is built from
needs_csv = pytest.mark.skipif(not Path(CSV).exists(), reason=f"{CSV} is not on this machine")


def wav_bytes(samples: np.ndarray, sr: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def tone_clip(freq: float, seed: int, seconds: float = 0.25) -> bytes:
    rng = np.random.default_rng(seed)
    sig = audio_gen.tone(freq * float(rng.uniform(0.98, 1.02)), seconds, SR, amp=0.4)
    return wav_bytes(sig + 0.05 * audio_gen.noise(seconds, SR, seed=seed))


def make_table(rows: list[dict], audio_columns=("audio",)) -> pa.Table:
    """Rows -> a table with the Hub schema: file, audio structs, instruction, label (+ extra clips)."""
    columns = {"file": pa.array([r["file"] for r in rows], pa.string())}
    for column in audio_columns:
        columns[column] = pa.array([{"bytes": r[column], "path": f"{r['file']}.wav"} for r in rows], AUDIO_TYPE)
    columns["instruction"] = pa.array([r["instruction"] for r in rows], pa.string())
    columns["label"] = pa.array([r["label"] for r in rows], pa.string())
    table = pa.table(columns)
    return table.replace_schema_metadata({b"huggingface": json.dumps(HF_FEATURES).encode()})


def pitch_rows(per_class: int = 10, singleton: bool = True, corrupt: bool = True) -> list[dict]:
    instruction = "Which pitch register is the tone in? Options: (A) low (B) mid (C) high."
    rows = [{"file": f"{label}_{i}.wav", "audio": tone_clip(freq, seed=100 * k + i), "instruction": instruction,
             "label": label} for k, (label, freq) in enumerate(PITCH.items()) for i in range(per_class)]
    if singleton:  # a class rarer than the folds: training parts only
        rows.append({"file": "ultra_0.wav", "audio": tone_clip(3520.0, seed=999), "instruction": instruction,
                     "label": "ultra"})
    if corrupt:
        rows.append({"file": "broken.wav", "audio": b"\x00GARBAGE" * 40, "instruction": instruction, "label": "low"})
    return rows


def write_hub_layout(folder, table: pa.Table, shards: int = 2):
    """README + data/test-0000K-of-0000N.parquet, as `huggingface-cli download` leaves it."""
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\ndataset_info:\n  splits:\n  - name: test\n---\n")
    step = -(-table.num_rows // shards)
    for k in range(shards):
        pq.write_table(table.slice(k * step, step), folder / "data" / f"test-{k:05d}-of-{shards:05d}.parquet")
    return folder


def write_save_to_disk(folder, table: pa.Table):
    """An Arrow IPC stream file plus dataset_info.json / state.json, as `Dataset.save_to_disk` writes."""
    folder.mkdir(parents=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=7):
            writer.write_batch(batch)
    (folder / "dataset_info.json").write_text(json.dumps(HF_FEATURES["info"]))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": name}], "_split": "test"}))
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Three registered-looking instances and one local one under one data root."""
    root = tmp_path_factory.mktemp("dsuperb")
    write_hub_layout(root / "PitchRegister_Tones", make_table(pitch_rows()))
    freqs = list(PITCH.values())
    pairs = []
    for i in range(24):  # odd rows: the same pitch twice; even rows: two different pitches
        a, b = (freqs[i % 3], freqs[i % 3]) if i % 2 else (freqs[i % 3], freqs[(i + 1) % 3])
        pairs.append({"file": f"pair{i:02d}", "audio": tone_clip(a, seed=i), "audio2": tone_clip(b, seed=50 + i),
                      "instruction": "Are the two tones the same pitch? Answer yes or no.",
                      "label": "yes" if a == b else "no"})
    pq.write_table(make_table(pairs, ("audio", "audio2")), root / "SamePitch_Tones.parquet")
    freqs = np.linspace(200.0, 2000.0, 20)
    reg = [{"file": f"f{i:02d}", "audio": tone_clip(f, seed=i), "instruction": "Estimate the pitch in Hz.",
            "label": f"{f:.1f}"} for i, f in enumerate(freqs)]
    write_save_to_disk(root / "PitchHz_Tones", make_table(reg))
    tags = [("low",), ("high",), ("low", "high"), ("mid",), ("low", "mid"), ("mid", "high")] * 4
    chords = []
    for i, names in enumerate(tags):  # a chord of the tagged tones: several labels per clip
        sig = sum(audio_gen.tone(PITCH[n] * (1 + 0.01 * (i % 3)), 0.25, SR, amp=0.3) for n in names)
        chords.append({"file": f"chord{i:02d}", "audio": wav_bytes(sig + 0.05 * audio_gen.noise(0.25, SR, seed=i)),
                       "instruction": "Which registers sound? List them.", "label": ", ".join(names)})
    pq.write_table(make_table(chords), root / "ChordRegisters_Tones.parquet")
    return root


@pytest.fixture(scope="module")
def registry(data_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "dsuperb_tasks.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "tasks": [
        {"id": "PitchRegister_Tones", "domain": "music", "category": "pitch & harmony", "kind": "single-label"},
        {"id": "SamePitch_Tones", "domain": "music", "category": "pitch & harmony", "kind": "multi-clip"},
        {"id": "PitchHz_Tones", "domain": "audio", "category": "signal", "kind": "regression"},
        {"id": "ChordRegisters_Tones", "domain": "music", "category": "tagging", "kind": "multi-label"},
        {"id": "NoSuchCopy_Tones", "domain": "speech", "category": "content", "kind": "single-label"},
    ]}))
    return path


@pytest.fixture(autouse=True)
def _no_user_registry(tmp_path, monkeypatch):
    # never read or write the real ~/.config/audioembed/dsuperb_tasks.yaml
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AUDIOEMBED_DSUPERB_REGISTRY", raising=False)
    monkeypatch.delenv("AUDIOEMBED_DSUPERB_DATA", raising=False)


# ----------------------------------------------------------------------------- registry


@needs_csv
def test_packaged_registry_covers_every_classification_and_regression_instance():
    entries = {e.id: e for e in Catalog.load(user_registry=None) if e.source == "packaged"}
    assert len(entries) == 259
    with open(CSV, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        task_id = row["HuggingfacePath"].split("/", 1)[1]
        entry = entries[task_id]
        assert entry.domain in DOMAINS and entry.category and entry.kind in KINDS
        assert entry.revision == (row["Version"] or None)
        if row["Category"] == "Classification":
            assert entry.kind in ("single-label", "multi-clip"), task_id
        if row["Category"] == "Regression":
            assert entry.kind == "regression", task_id
    kinds = {e.kind for e in entries.values()}
    assert kinds == set(KINDS)
    # text-generation rows that are really classification
    assert entries["MARBLEMusicTagging_MTGTop50-Fold1"].kind == "multi-label"
    assert entries["HEARLanguageIdentification_VoxLingua107Top10-Fold1"].kind == "single-label"
    assert entries["SuperbASR_LibriSpeech-TestClean"].metric == "wer"
    assert entries["SuperbSV_VoxCeleb1-Test"].kind == "multi-clip"
    assert entries["InstrumentClassification_Nsynth"].domain == "music"
    assert entries["EnvironmentRecognition_ESC50"].domain == "audio"


@needs_csv
def test_registry_file_is_what_the_generator_builds():
    assert render(build_entries(Path(CSV)), Path(CSV)) == packaged_registry_path().read_text()


def test_task_selection():
    catalog = Catalog.load()
    music = catalog.select("domain:music")
    assert music and all(e.domain == "music" for e in music)
    both = catalog.select("kind:regression,SuperbKS_SpeechCommandsV1-Test")
    assert [e.kind for e in both].count("regression") == 9 and len(both) == 10
    assert catalog.get("Animal Sound Classification").id == "AnimalClassification_WaveSource-Test"  # CSV name
    with pytest.raises(CatalogError, match="did you mean"):
        catalog.select("SuperbKS_SpeechCommandsV1-Tst")


def test_infer_kind_from_labels():
    assert infer_kind(["1.5", "2.0", "3.25", "4"], ["audio"]).kind == "regression"
    assert infer_kind(["0", "1", "1", "0"], ["audio"]).kind == "single-label"
    assert infer_kind(["rock, pop", "pop", "jazz; rock", "pop, jazz"], ["audio"]).kind == "multi-label"
    assert infer_kind(["yes", "no", "yes"], ["audio", "audio2"]).kind == "multi-clip"
    free = [f"the quick brown fox {i}" for i in range(12)]
    assert infer_kind(free, ["audio"]).kind == "generation"


# ----------------------------------------------------------------------------- loader


def test_three_layouts_read_alike(data_root, tmp_path):
    table = make_table(pitch_rows(per_class=3, singleton=False, corrupt=False))
    layouts = {
        "hub": write_hub_layout(tmp_path / "hub", table),
        "parquet": tmp_path / "one.parquet",
        "save_to_disk": write_save_to_disk(tmp_path / "disk", table),
    }
    pq.write_table(table, layouts["parquet"])
    texts = {}
    for name, path in layouts.items():
        instance = open_instance(path)
        assert instance.layout == name
        assert instance.audio_columns == ["audio"]
        texts[name] = instance.read_text()
        clips = materialize_audio(instance, texts[name].ids, ["audio"], tmp_path / f"clips-{name}")
        assert not clips.problems and len(clips.clips) == 9
        first = clips.clips[0]["audio"]
        decoded, sr = sf.read(first, dtype="float32")
        expected, _ = sf.read(io.BytesIO(table.column("audio")[0].as_py()["bytes"]), dtype="float32")
        assert sr == SR and np.array_equal(decoded, expected)
    assert texts["hub"].ids == texts["parquet"].ids == texts["save_to_disk"].ids
    assert texts["hub"].labels == texts["save_to_disk"].labels
    # DatasetDict folder: the test split
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))
    write_save_to_disk(tmp_path / "dict" / "test", table)
    assert open_instance(tmp_path / "dict").read_text().ids == texts["hub"].ids


def test_outlier_schemas_and_clip_order(tmp_path):
    rows = [{"file": f"r{i}", "testing": tone_clip(220.0, i), "enrollment": tone_clip(440.0, 10 + i),
             "instruction": "same speaker?", "label": "yes"} for i in range(3)]
    pq.write_table(make_table(rows, ("testing", "enrollment")), tmp_path / "sv.parquet")
    assert open_instance(tmp_path / "sv.parquet").audio_columns == ["enrollment", "testing"]
    rows = [{"file": f"r{i}", "doc": tone_clip(220.0, i), "query": tone_clip(440.0, i), "instruction": "?",
             "label": "no"} for i in range(3)]
    pq.write_table(make_table(rows, ("doc", "query")), tmp_path / "qbe.parquet")
    assert open_instance(tmp_path / "qbe.parquet").audio_columns == ["query", "doc"]
    rows = [{"file": f"r{i}", "audio1": tone_clip(220.0, i), "audio2": tone_clip(440.0, i), "audio3": tone_clip(880.0, i),
             "instruction": "?", "label": "a"} for i in range(2)]
    pq.write_table(make_table(rows, ("audio3", "audio1", "audio2")), tmp_path / "three.parquet")
    assert open_instance(tmp_path / "three.parquet").audio_columns == ["audio1", "audio2", "audio3"]


def test_loader_errors_name_the_path(tmp_path):
    with pytest.raises(InstanceError, match="no such file"):
        open_instance(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InstanceError, match="no data files"):
        open_instance(tmp_path / "empty")
    entry = TaskEntry(id="X_Y", domain="speech", category="c", kind="single-label", metric="accuracy",
                      hub_id="DynamicSuperb/X_Y")
    with pytest.raises(InstanceError, match="X_Y: no local copy"):
        locate_instance(entry, tmp_path)


def test_hub_cache_snapshot_and_path_only_clips(tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "datasets--DynamicSuperb--X_Y" / "snapshots" / revision
    table = make_table(pitch_rows(per_class=1, singleton=False, corrupt=False))
    write_hub_layout(snapshot, table, shards=1)
    entry = TaskEntry(id="X_Y", domain="music", category="c", kind="single-label", metric="accuracy",
                      hub_id="DynamicSuperb/X_Y", revision=revision)
    assert locate_instance(entry, tmp_path) == snapshot
    # clips stored as files next to the parquet ({bytes: null, path}) are used in place
    audio_gen.write_audio(tmp_path / "local" / "clips" / "a.wav", audio_gen.tone(300.0, 0.1, SR), SR)
    rows = pa.table({"file": ["a"], "audio": pa.array([{"bytes": None, "path": "clips/a.wav"}], AUDIO_TYPE),
                     "instruction": ["?"], "label": ["x"]})
    pq.write_table(rows, tmp_path / "local" / "one.parquet")
    clips = materialize_audio(open_instance(tmp_path / "local" / "one.parquet"), ["a"], ["audio"], tmp_path / "c")
    assert clips.clips == {0: {"audio": str((tmp_path / "local" / "clips" / "a.wav").resolve())}}


def test_pair_features():
    a = np.array([[1.0, 2.0]])
    b = np.array([[3.0, -1.0]])
    assert pair_features([a]).tolist() == a.tolist()
    assert pair_features([a, b]).tolist() == [[1.0, 2.0, 3.0, -1.0, 2.0, 3.0, 3.0, -2.0]]


# ----------------------------------------------------------------------------- CLI


def test_add_infers_kind_and_writes_user_registry(data_root, tmp_path):
    runner = CliRunner()
    target = tmp_path / "user.yaml"
    result = runner.invoke(dsuperb_group, ["add", str(data_root / "PitchHz_Tones"), "--domain", "audio",
                                           "--registry", str(target)])
    assert result.exit_code == 0, result.output
    assert "regression" in result.output
    result = runner.invoke(dsuperb_group, ["add", str(data_root / "SamePitch_Tones.parquet"), "--domain", "music",
                                           "--category", "pitch", "--registry", str(target)])
    assert result.exit_code == 0, result.output
    entries = {e.id: e for e in Catalog.load(target) if e.source != "packaged"}
    assert entries["PitchHz_Tones"].kind == "regression" and entries["PitchHz_Tones"].metric == "mae"
    assert entries["SamePitch_Tones"].kind == "multi-clip" and entries["SamePitch_Tones"].domain == "music"
    assert entries["SamePitch_Tones"].path == str(data_root / "SamePitch_Tones.parquet")
    again = runner.invoke(dsuperb_group, ["add", str(data_root / "PitchHz_Tones"), "--domain", "audio",
                                          "--registry", str(target)])
    assert again.exit_code != 0 and "already registered" in again.output


def test_eval_cli_end_to_end(data_root, registry, tmp_path):
    runner = CliRunner()
    args = ["eval", "-u", "mfcc", "--tasks", "domain:music,domain:audio", "--data-root", str(data_root),
            "--registry", str(registry), "--folds", "4", "--max-epochs", "40", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "results"), "-q"]
    result = runner.invoke(dsuperb_group, args)
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "results").iterdir())
    tasks = {p.stem: json.loads(p.read_text()) for p in (run_dir / "tasks").glob("*.json")}
    pitch = tasks["PitchRegister_Tones"]
    assert pitch["metrics"]["accuracy"]["mean"] >= 0.8 and pitch["metrics"]["accuracy"]["n"] == 4
    assert pitch["train_only_classes"] == ["ultra"]
    assert pitch["problem_count"] == 1 and "broken.wav" in pitch["problems"][0]
    assert pitch["examples"] == 31 and pitch["rows"] == 32
    same = tasks["SamePitch_Tones"]
    assert same["kind"] == "multi-clip" and same["clips"] == ["audio", "audio2"]
    hz = tasks["PitchHz_Tones"]
    assert hz["kind"] == "regression" and hz["config"]["probe"] == "ridge" and hz["metrics"]["pearson"]["n"] == 4
    assert hz["metrics"]["pearson"]["mean"] > 0.5
    chords = tasks["ChordRegisters_Tones"]
    assert chords["kind"] == "multi-label" and chords["primary_metric"] == "map"
    assert chords["metrics"]["map"]["mean"] > 0.7 and set(chords["classes"]) == {"low", "mid", "high"}
    report = (run_dir / "report.md").read_text()
    # (a value, whichever: the linear probe now reaches 1.000 on these easy tones)
    assert re.search(r"\| music \| [01]\.\d{3} \(n=2\)", report) and "(n=2)" in report and "| audio | " in report
    summary = json.loads((run_dir / "summary.json").read_text())
    music = next(r for r in summary["by_domain"] if r["domain"] == "music")
    assert music["accuracy"]["tasks"] == 2 and music["map"]["tasks"] == 1

    # a rerun skips the finished tasks and reads features from the cache
    again = runner.invoke(dsuperb_group, args)
    assert again.exit_code == 0, again.output
    assert "4 cached" in again.output
    assert json.loads((run_dir / "tasks" / "PitchRegister_Tones.json").read_text()) == pitch


def test_eval_goes_on_past_broken_and_missing_instances(data_root, registry, tmp_path):
    broken = tmp_path / "root"
    broken.mkdir()
    (broken / "PitchRegister_Tones.parquet").write_bytes(b"not a parquet file")
    (broken / "SamePitch_Tones.parquet").symlink_to(data_root / "SamePitch_Tones.parquet")
    result = CliRunner().invoke(dsuperb_group, [
        "eval", "-u", "mfcc", "--tasks",
        "PitchRegister_Tones,SamePitch_Tones,NoSuchCopy_Tones,SuperbASR_LibriSpeech-TestClean",
        "--data-root", str(broken), "--registry", str(registry), "--folds", "3", "--max-epochs", "20",
        "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "results"), "-q"])
    assert result.exit_code == 3, result.output  # one failed, one finished
    assert "1 done, 1 skipped, 1 missing, 1 failed" in result.output
    assert "PitchRegister_Tones.parquet" in result.output  # the failure names the file
    assert "1 task(s): NoSuchCopy_Tones" in result.output


def test_eval_clear_errors(registry, tmp_path):
    runner = CliRunner()
    result = runner.invoke(dsuperb_group, ["eval", "-u", "mfcc", "--tasks", "Nope_Task", "--registry", str(registry)])
    assert result.exit_code != 0 and "unknown Dynamic-SUPERB task 'Nope_Task'" in result.output
    result = runner.invoke(dsuperb_group, ["eval", "-u", "mfcc", "--folds", "2", "--registry", str(registry)])
    assert result.exit_code != 0 and "--folds must be at least 3" in result.output
    result = runner.invoke(dsuperb_group, ["eval", "-u", "mfcc", "--tasks", "NoSuchCopy_Tones", "--registry",
                                           str(registry), "--data-root", str(tmp_path), "-o", str(tmp_path / "r")])
    assert result.exit_code != 0 and "none of the selected tasks has a local copy" in result.output


def test_list_command(data_root, registry):
    result = CliRunner().invoke(dsuperb_group, ["list", "--tasks", "kind:multi-clip", "--registry", str(registry),
                                                "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    assert "SamePitch_Tones" in result.output and "[local]" in result.output
    assert "SuperbSV_VoxCeleb1-Test" in result.output and "[missing]" in result.output
