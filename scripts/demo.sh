#!/usr/bin/env bash
# Sets up and runs the main job: builds recgpt, writes the built-in model and answers a sample request.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci --target recgpt
model=build/models/tiny
[ -f "$model/config.json" ] || build/ci/recgpt make-model --preset tiny --seed 1 --out "$model"
build/ci/recgpt generate --model "$model" --chat --max-tokens 48 --temperature 0.8 --repetition-penalty 1.3 --seed 42 \
  --prompt "The user bought hiking boots and a rain jacket last week. Suggest three items for a weekend trip."
