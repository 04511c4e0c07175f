#!/bin/sh
# Runs the gguf-package oracle test. Without the project's .venv it is skipped
# (exit 77, ctest's SKIP_RETURN_CODE: shown as "Skipped", not as passed), and
# where the reference tests are required (CI=true or SNUG_REQUIRE_REFERENCE=1,
# as tests/conftest.py decides for pytest) it fails.
if [ ! -x "$SNUG_VENV_PY" ]; then
  case "${SNUG_REQUIRE_REFERENCE:-0}:$(printf %s "${CI:-}" | tr 'A-Z' 'a-z')" in
    0:true | 0:1 | 0:yes | [!0]*:*)
      echo "snug: error: tensor_dequant_oracle: no $SNUG_VENV_PY (scripts/setup), and skips fail here (CI / SNUG_REQUIRE_REFERENCE)"
      exit 1 ;;
  esac
  echo "tensor_dequant_oracle: skipped, no $SNUG_VENV_PY"
  exit 77
fi
exec "$SNUG_VENV_PY" -m pytest -q -rs "$1"
