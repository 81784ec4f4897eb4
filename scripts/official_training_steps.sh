#!/usr/bin/env bash
# The step-level check of every paper preset against its paper's code (results/official_training/steps/):
#   scripts/official_training_steps.sh CHECKOUTS [STEPS_MNIST] [STEPS_CIFAR]
# CHECKOUTS holds clones of the five official repositories under their GitHub names
# (Active-Passive-Losses, ALFs, Active-Negative-Loss, joint-asymmetric-loss, eps-softmax).
# A cell whose report exists is skipped: re-running resumes.
set -uo pipefail
cd "$(dirname "$0")/.."
checkouts=${1:?usage: scripts/official_training_steps.sh CHECKOUTS [STEPS_MNIST] [STEPS_CIFAR]}
mnist_steps=${2:-500}
cifar_steps=${3:-300}
out=results/official_training/steps
mkdir -p "$out"
python=${PYTHON:-python}
status=0
# paper  repository  loss  noise  rate
while read -r paper repo loss noise rate; do
    [ -z "$paper" ] && continue
    steps=$mnist_steps
    case $paper in jal|eps) steps=$cifar_steps ;; esac
    report="$out/${paper}_${loss}_${noise}${rate}.json"
    [ -f "$report" ] && continue
    echo "== $paper $loss $noise $rate ($steps steps)"
    "$python" scripts/check_official_training.py --paper "$paper" --checkout "$checkouts/$repo" --loss "$loss" \
        --noise "$noise" --rate "$rate" --steps "$steps" --out "$report" 2>/dev/null | tail -5 || status=1
done <<'CELLS'
anl  Active-Negative-Loss   anl_ce      symmetric  0.8
anl  Active-Negative-Loss   anl_fl      symmetric  0.8
anl  Active-Negative-Loss   anl_ce      asymmetric 0.4
apl  Active-Passive-Losses  ce          symmetric  0.8
apl  Active-Passive-Losses  gce         symmetric  0.8
apl  Active-Passive-Losses  sce         symmetric  0.8
apl  Active-Passive-Losses  nce_rce     symmetric  0.8
apl  Active-Passive-Losses  nce_rce     asymmetric 0.4
alfs ALFs                   nce_agce    symmetric  0.8
alfs ALFs                   nce_aul     symmetric  0.8
alfs ALFs                   nce_agce    asymmetric 0.4
jal  joint-asymmetric-loss  jal_ce      symmetric  0.8
jal  joint-asymmetric-loss  jal_fl      asymmetric 0.4
eps  eps-softmax            ce_eps_mae  symmetric  0.8
eps  eps-softmax            fl_eps_mae  asymmetric 0.4
CELLS
"$python" scripts/check_official_training.py --table "$out" > "$out/README.md"
exit $status
