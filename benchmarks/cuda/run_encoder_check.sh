#!/usr/bin/env bash
# The encoder suite once on a GPU machine that has no package registry and takes at most 64 MiB of files
# (the lent H200 of this workplace): its own python3 (torch with CUDA, sentence-transformers, onnxruntime)
# runs lmrec from this checkout.
#
#   bash benchmarks/cuda/run_encoder_check.sh prepare   # here: .gpu/ = the model in fp16 (45 MB) + ml-100k's files
#   OUT=<folder> bash benchmarks/cuda/run_encoder_check.sh  # there, with .gpu/ carried: results under $OUT
#
# `DEVICE=cpu PY=.venv/bin/python QUICK=1 OUT=/tmp/x bash benchmarks/cuda/run_encoder_check.sh` is a dry run here.
# Paths the machine cannot run on the GPU (ONNX Runtime without its CUDA provider) are reported by the suite.
set -u
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
DATA=${DATA:-../shared/data/ml-100k}
if [ "${1:-}" = prepare ]; then
  set -e
  grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude  # MovieLens never enters the project
  rm -rf .gpu && mkdir -p .gpu/model16 .gpu/ml-100k
  cp "$DATA"/{u.data,u.item,u.user,u.genre,u.occupation} .gpu/ml-100k/
  .venv/bin/python - <<'PYEOF'
import shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
from lmrec.export.encoder_export import default_model_path
model = Path(default_model_path())
shutil.copytree(model, ".gpu/model16", dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
weights = load_file(model / "model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
          ".gpu/model16/model.fp16.safetensors")
PYEOF
  du -sh .gpu; exit 0
fi
DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}; QUICK=${QUICK:-0}
start=$(date +%s)
(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1; nproc; $PY -V) | tee $OUT/facts.txt
$PY -c "import onnxruntime as o, torch, sentence_transformers as s, transformers as t, numpy as n; print('ort', o.__version__, o.get_available_providers()); print('torch', torch.__version__, torch.version.cuda, torch.cuda.is_available()); print('st', s.__version__, 'transformers', t.__version__, 'numpy', n.__version__)" 2>&1 | tee -a $OUT/facts.txt
# The package as setuptools maps it (lmrec.export = export/, ...), without pip: the project pins Python 3.11.
SITE=/tmp/lmrec-site; rm -rf $SITE; mkdir -p $SITE
cp -r lmrec $SITE/lmrec && for d in export server client model_repository benchmarks; do cp -r $d $SITE/lmrec/$d; done
export PYTHONPATH=$SITE
# Upcast the fp16 weights back into the fp32 folder every path serves.
rm -rf /tmp/model && cp -r .gpu/model16 /tmp/model && rm /tmp/model/model.fp16.safetensors
$PY - <<'PYEOF' 2>&1 | tee -a $OUT/facts.txt
from safetensors.torch import load_file, save_file
t = load_file(".gpu/model16/model.fp16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in t.items()}, "/tmp/model/model.safetensors")
print("model upcast:", len(t), "tensors")
PYEOF
if [ "$QUICK" = 1 ]; then ARGS="--n-texts 32 --rounds 1 --batch-sizes 1,8 --concurrency 1 --min-seconds 0.2 --max-seconds 1 --min-requests 2";
else ARGS="--n-texts 512 --rounds 3 --batch-sizes 1,8,32,64 --concurrency 1,4,8"; fi
common="--device $DEVICE --model /tmp/model --data-dir .gpu/ml-100k --work-dir /tmp/work"
timeout 300 $PY -m lmrec.cli bench encoder $common --paths all $ARGS --out $OUT --name encoder-cuda 2>&1 | tee -a $OUT/run.log
rc=${PIPESTATUS[0]}; echo "run 1 rc=$rc after $(( $(date +%s) - start )) s"
if [ $rc != 0 ]; then  # whatever broke, keep the sentence-transformers figures
  timeout 200 $PY -m lmrec.cli bench encoder $common --paths sentence-transformers $ARGS --out $OUT --name encoder-cuda 2>&1 | tee -a $OUT/run.log
  echo "run 1 retry rc=${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
fi
if [ "$QUICK" = 1 ]; then LARGE="--n-texts 64 --rounds 1 --batch-sizes 16,32 --min-seconds 0.2 --max-seconds 1 --min-requests 2";
else LARGE="--n-texts 2048 --rounds 3 --batch-sizes 128,256,512"; fi
timeout 150 $PY -m lmrec.cli bench encoder $common --paths sentence-transformers $LARGE --out $OUT --name encoder-cuda-large 2>&1 | tee -a $OUT/run.log
echo "run 2 rc=${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
rm -f $OUT/*.png  # at most 8 files come back; the PNGs are redrawn from the JSON (write_results)
ls -la $OUT
