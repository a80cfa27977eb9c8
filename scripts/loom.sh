#!/usr/bin/env bash
# Loom model check of the lock-free append protocol
# (src/log/link.rs, tests/loom_link.rs).
#
#   scripts/loom.sh                          # all models (three_writers alone
#                                            # runs > 25 min; the rest ~10 min)
#   scripts/loom.sh stopped_                 # the six stop models (~5 min)
#   LOOM_MAX_PREEMPTIONS=1 scripts/loom.sh   # one preemption bound for every
#                                            # model (defaults: 2 with two
#                                            # writers, 1 with three)
#
# Builds with --cfg loom in its own target directory (target/loom), so the
# normal target/ is not rebuilt afterwards; the first build takes a few
# minutes. Release mode. Each model prints which heads its reader saw (and
# fails if it saw only one: the model would explore too little).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
# --no-default-features: tokio (the jetstream feature) has its own
# cfg(loom) and does not build under it.
exec cargo test --release --no-default-features --test loom_link -- --nocapture "$@"
