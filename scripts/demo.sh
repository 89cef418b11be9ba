#!/usr/bin/env bash
# The README's demo: demo corpus -> Ray pipeline -> shards -> leakage report -> DeepSpeed pretraining
# -> evaluation, on this machine's CPUs. Each job skips the work a previous run already finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUN=data/demo-run
step() { printf '\n=== %s ===\n' "$*"; }

step "1/5 demo corpus -> data/demo"
$PY -m pipeline.demo --out data/demo --videos 128   # ~1200 samples (4 overlapping spans per slot, configs/demo.yaml)

# Outputs made from another corpus (an older generator version or size) would be resumed with stale
# shards: start $RUN afresh when the corpus it was made from is not the one in data/demo.
# Likewise when the outputs' layout changed (v2: input shards written by the workers, ledger rebuilt from them;
# v3: frames decoded in-process by PyAV, other JPEG bytes, so the pipeline would refuse to resume v2's).
LAYOUT=v3-pyav-decode
if [ -d "$RUN" ] && { ! cmp -s data/demo/.demo-done.json "$RUN/corpus.json" || [ "$(cat "$RUN/layout" 2>/dev/null)" != "$LAYOUT" ]; }; then
  echo "data/demo or the output layout changed since $RUN was made: removing $RUN and starting afresh"
  rm -rf "$RUN"
fi
mkdir -p "$RUN" && cp data/demo/.demo-done.json "$RUN/corpus.json" && echo "$LAYOUT" > "$RUN/layout"

step "2/5 Ray pipeline -> $RUN/pipeline"
$PY -m pipeline run --config configs/demo.yaml
# How true the samples' transcripts are: window word error rate against the generator's narration.
echo "transcript word error rate per source: $($PY -m pipeline.demo.transcript_check --corpus data/demo --shards "$RUN/pipeline/shards/shard-*.tar")"

step "3/5 leakage check -> $RUN/leakage"
$PY -m dedup leakage --config configs/demo.yaml

step "4/5 DeepSpeed pretraining (dinov2_cpu preset, 2 CPU ranks) -> $RUN/train"
DS_ACCELERATOR=cpu $PY -m deepspeed.launcher.runner --num_gpus 2 --master_addr 127.0.0.1 --master_port "${TVTS_MASTER_PORT:-29517}" \
  --module training.pretrain --config configs/demo.yaml

step "5/5 evaluation -> $RUN/eval"
# The trained model, then the same preset with random weights (--random-init -> $RUN/eval/random-init/):
# held-out sort and t2v, and the downstream sets of data/demo/downstream (pipeline.demo.eval_sets:
# shapes_captions t2v, shapes_actions v2v, linear probe and finetune, shapes_svo SVO-Probes); finetune
# trains the video tower end to end (DeepSpeed, one process; a rerun resumes its checkpoints).
# The baseline sorts at chance: 3 shuffle/mask repeats instead of 10 say so at a third of the time.
for INIT in "" --random-init; do
  REPEATS=$([ -z "$INIT" ] && echo 10 || echo 3)
  $PY -m training.evaluate --checkpoint "$RUN/train" --task sort --config configs/demo.yaml $INIT --set eval.sort_repeats=$REPEATS
  $PY -m training.evaluate --checkpoint "$RUN/train" --task t2v --config configs/demo.yaml $INIT
  $PY -m training.evaluate --checkpoint "$RUN/train" --task t2v --dataset shapes_captions --config configs/demo.yaml $INIT
  $PY -m training.evaluate --checkpoint "$RUN/train" --task v2v --config configs/demo.yaml $INIT
  $PY -m training.evaluate --checkpoint "$RUN/train" --task linear-probe --config configs/demo.yaml $INIT
  $PY -m training.evaluate --checkpoint "$RUN/train" --task svo-probes --config configs/demo.yaml $INIT
  $PY -m training.evaluate --checkpoint "$RUN/train" --task finetune --config configs/demo.yaml $INIT
done
# And the downstream tasks from the preset's starting weights (DINOv2 video tower, MiniLM text, no video
# pretraining): what the demo's pretraining added to its image/text init, not only to random weights.
$PY -m training.evaluate --checkpoint "$RUN/train" --task t2v --dataset shapes_captions --config configs/demo.yaml --preset-init
$PY -m training.evaluate --checkpoint "$RUN/train" --task v2v --config configs/demo.yaml --preset-init
$PY -m training.evaluate --checkpoint "$RUN/train" --task linear-probe --config configs/demo.yaml --preset-init
$PY -m training.evaluate --checkpoint "$RUN/train" --task svo-probes --config configs/demo.yaml --preset-init

cat <<MSG

Demo finished. Outputs:
  corpus            data/demo/ (manifest.jsonl)
  shards + summary  $RUN/pipeline/shards/, $RUN/pipeline/summary.json
  leakage report    $RUN/leakage/report.html (blocklist.txt, report.json); review it:
                    .venv/bin/python -m dedup review --report $RUN/leakage
  training          $RUN/train/ (checkpoints, metrics.jsonl, loss curve)
  evaluation        $RUN/eval/sort.json, $RUN/eval/t2v.json, $RUN/eval/<dataset>/<task>.json, $RUN/eval/{random,preset}-init/
MSG
echo
$PY -m training summary --eval-dir "$RUN/eval"
