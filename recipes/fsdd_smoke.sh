#!/usr/bin/env bash
# Smoke check of the downstream pipeline on real speech (FSDD, ../shared/data/fsdd):
# digit recognition and speaker ID with the mfcc baseline and a tiny random-weight HuBERT,
# full training set and 8 shots per class x 5 seeds. Writes results/fsdd/ (with report.md) and
# docs/fsdd_smoke.md, generated from the result files by recipes/fsdd_smoke_page.py.
# Not a claim about models: a random HuBERT is expected to be weak.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${1:-../shared/data/fsdd/labels.csv}
OUT=${OUT:-results/fsdd}
MODEL=${MODEL:-results/tiny-hubert-random}

python - "$MODEL" <<'PY'
import sys, json, pathlib, torch
from transformers import HubertConfig, HubertModel
folder = pathlib.Path(sys.argv[1])
if not (folder / "config.json").exists():
    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256)
    HubertModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 16000, "do_normalize": False,
        "feature_size": 1, "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False}))
PY

for upstream in mfcc hubert; do
  model=()
  [ "$upstream" = hubert ] && model=(--model "$MODEL")
  audioembed downstream classify -u "$upstream" "${model[@]}" --data "$DATA" --label-column digit \
      --shots 8,all --seeds 5 -o "$OUT" -q
  audioembed downstream speaker_id -u "$upstream" "${model[@]}" --data "$DATA" \
      --shots 8,all --seeds 5 -o "$OUT" -q
done
audioembed report "$OUT" -o "$OUT/report.md"
python recipes/fsdd_smoke_page.py "$OUT" docs/fsdd_smoke.md
