#!/usr/bin/env bash
# Start or continue one campaign (issue 19), from the repository root:
#
#   campaigns/run.sh mkg-y [more dhns-search run options]
#
# The same command continues the study on any machine: its Optuna journal (campaigns/<name>/study.journal)
# is under version control, the CPU budget (--cpu-hours, the CPU time of the study's finished trials) is
# recorded in it, and a trial interrupted by Ctrl-C or SIGTERM resumes from its checkpoint on this machine
# (on another machine it starts again from its first epoch).  Substitute textual features are made from the
# entity names first when the dataset has names (MKG-Y, DB15K; MKG-W has Wikidata ids only); visual features
# are marked missing.  One torch thread: a campaign takes one core.  The pruner prunes from the third trial on
# (--pruner-startup 2): the two warm starts are its first reference, and unpruned random start-up trials of a
# dim-1024 distance scorer with DHNS cost hours each on a CPU core.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: campaigns/run.sh mkg-y|mkg-w|db15k [run options]}"; shift
case "$name" in
    mkg-y) dataset=MKG-Y; hours=30 ;;
    mkg-w) dataset=MKG-W; hours=30 ;;
    db15k) dataset=DB15K; hours=40 ;;
    *) echo "unknown campaign '$name' (mkg-y, mkg-w, db15k)" >&2; exit 2 ;;
esac
BIN="${VENV:-.venv}/bin"
args=(--space "campaigns/$name/space.yaml" --study "campaign-$name" --storage "journal:campaigns/$name/study.journal"
      --cpu-hours "$hours" --pruner-startup 2)  # not a terminal: one line per trial and evaluation (the log of a campaign)
for warm in "campaigns/$name"/warm-start*.yaml; do [ -f "$warm" ] && args+=(--enqueue "$warm"); done
if [ "$dataset" != MKG-W ]; then
    features="$PWD/features/$dataset-textual.npy"
    if [ ! -f "$features" ]; then
        HF_HUB_OFFLINE=1 "$BIN/dhns-search" features text "../shared/benchmarks/$dataset" --out "$features" -q
    fi
    args+=(--set "data.features={textual: $features}")
fi
OMP_NUM_THREADS=1 exec "$BIN/dhns-search" run "${args[@]}" "$@"
