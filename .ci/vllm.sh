#!/usr/bin/env bash
# CI step for the real-engine tests: install the `vllm` extra (the vLLM CPU build) into the CI
# virtual environment given as $1, then run the tests marked `engine` (tests/integrations/vllm).
#
#   bash .ci/vllm.sh /path/to/venv            # install, then run the engine tests
#   bash .ci/vllm.sh /path/to/venv install    # install only (.ci/run then runs every test)
#
# Budget: install about 2.5-4 min (about 3.3 GiB), tests about 4-6 min on 2 cores (the OpenAI
# server test, tests/integrations/vllm/test_openai_server.py, about 1 min of it).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:?usage: .ci/vllm.sh VENV [install]}"
mode="${2:-all}"
py="$venv/bin/python"
start=$(date +%s)

echo "ci(vllm): installing the vllm extra into $venv"
"$py" -m pip install --quiet --disable-pip-version-check -e '.[vllm,test]'
# The CPU build pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch;
# vLLM does not need them for text models, and importing a mismatched one breaks `import vllm`.
"$py" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
"$py" -c "import vllm, torch; print('ci(vllm): vllm', vllm.__version__, 'torch', torch.__version__)"
echo "ci(vllm): install took $(( $(date +%s) - start )) s"
[ "$mode" = install ] && exit 0

# No network beyond the package registries: the tests build their model locally.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_LOGGING_LEVEL=WARNING KVSCHED_REQUIRE_ENGINE=1

tests_start=$(date +%s)
set +e
"$py" -m pytest -q -m engine tests/integrations/vllm -p no:cacheprovider
status=$?
set -e
echo "ci(vllm): engine tests took $(( $(date +%s) - tests_start )) s (exit $status)"
if [ "$status" -eq 5 ]; then
    echo "ci(vllm): pytest collected no engine test" >&2
    exit 1
fi
exit "$status"
