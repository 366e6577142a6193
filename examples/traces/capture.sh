#!/usr/bin/env bash
# Runs ON the GPU machine (device tool, carry [".device-carry"]), from the repo root:
#
#   bash examples/traces/capture.sh NAME NPROC [tp_decoder args...]
#
# Captures examples/tp_decoder.py twice, NPROC ranks under torchrun: once under
# torch.profiler (Kineto JSON per rank) and once under one Nsight Systems session
# over torchrun (all ranks in one report, window = cudaProfilerStart/Stop).  Writes
# to $OUT: NAME_torch.tar (rank traces + facts + env.txt), NAME_nsys.nsys-rep.gz,
# NAME_nsys.sqlite.gz, NAME_nsys_facts.tar.  Four files: two captures fit one call.
set -uo pipefail
name=$1; n=$2; shift 2
model=(--layers 4 --hidden 4096 --heads 32 --batch 8 --prompt-len 128 --gen-len 16 --warmup 2)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# the nvtx package (a tracekit dependency) is not installed there; fall back silently
python3 -c 'import nvtx' 2>/dev/null ||
  python3 -m pip install -q --no-deps --no-index .device-carry/wheels/nvtx-*.whl 2>&1 | tail -1
w=$(mktemp -d)
run=(python3 -m torch.distributed.run --nproc-per-node "$n" examples/tp_decoder.py "${model[@]}")

mkdir -p "$w/${name}_torch"
{
  echo "# capture: $name, $n rank(s), $(date -u +%FT%TZ)"
  echo "# command: ${run[*]} --profiler torch $*"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
  nvidia-smi topo -m 2>/dev/null
  python3 -c 'import torch,sys; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", ".".join(map(str, torch.cuda.nccl.version())))'
  python3 -c 'import nvtx; print("nvtx package", nvtx.__file__)' 2>&1 | tail -1
  "$(ls -d /opt/nvidia/nsight-compute/*/host | tail -1)/target-linux-x64/nsys" --version
  uname -r
} > "$w/${name}_torch/env.txt" 2>&1
cat "$w/${name}_torch/env.txt"

"${run[@]}" --profiler torch --out "$w/${name}_torch" "$@" 2>&1 | tr '\r' '\n' | grep -v '^W.*run.py\|^\*\*\*\|OMP_NUM\|Processing [0-9]* events' | tail -20
tar -C "$w" -cf "$OUT/${name}_torch.tar" "${name}_torch"

bash .device-carry/nsys-capture.sh "${name}_nsys" --nsys-args \
  "-t cuda,nvtx -s none --cpuctxsw=none --cuda-graph-trace=node --capture-range=cudaProfilerApi --capture-range-end=stop" \
  -- "${run[@]}" --profiler none --out "$w/${name}_nsys" "$@" 2>&1 | tr '\r' '\n' | grep -v '^W.*run.py\|^\*\*\*\|OMP_NUM\|Processing [0-9]* events' | tail -20
tar -C "$w" -cf "$OUT/${name}_nsys_facts.tar" "${name}_nsys"
ls -la "$OUT"
