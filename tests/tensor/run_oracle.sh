#!/bin/sh
# Runs the gguf-package oracle test; passes (with a message) when the project's
# .venv is missing so that machines without Python still run ctest green.
if [ ! -x "$SNUG_VENV_PY" ]; then
  echo "tensor_dequant_oracle: skipped, no $SNUG_VENV_PY"
  exit 0
fi
exec "$SNUG_VENV_PY" -m pytest -q -p no:cacheprovider "$1"
