#!/usr/bin/env bash
# A local S3 API for trying s3:// paths without a cloud account: moto in server mode (installed with
# the test extras). Data lives in memory and is lost when it stops. Then:
#   export AWS_ENDPOINT_URL=http://127.0.0.1:${PORT:-5000} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
#   export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
set -euo pipefail
exec "${VENV:-.venv}/bin/python" -m moto.server -H 127.0.0.1 -p "${PORT:-5000}"
