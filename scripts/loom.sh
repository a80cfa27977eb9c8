#!/usr/bin/env bash
# Loom model check of the lock-free append protocol
# (src/log/link.rs, tests/loom_link.rs).
#
#   scripts/loom.sh                          # all models (~20 s once built)
#   scripts/loom.sh three_writers            # one model (test name filter)
#   LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh   # one preemption bound for every
#                                            # model (defaults: 4 with two
#                                            # writers, 2 with three)
#
# Builds with --cfg loom in its own target directory (target/loom), so the
# normal target/ is not rebuilt afterwards; the first build takes a few
# minutes. Release mode: loom runs ~180,000 executions. Each model prints
# how many it explored and which heads its reader saw.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
exec cargo test --release --test loom_link -- --nocapture "$@"
