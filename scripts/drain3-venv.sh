#!/usr/bin/env bash
# Drain3 (PyPI) in a virtualenv outside the checkout, for `cargo bench -p nixtest-miner --bench drain3`.
set -euo pipefail
venv=${NIXTEST_DRAIN3_VENV:-/var/cache/nixtest-bench/drain3}
command -v python3 >/dev/null || apt-get install -y -qq python3
python3 -m venv --help >/dev/null 2>&1 || apt-get install -y -qq python3-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import drain3' 2>/dev/null || "$venv/bin/pip" install -q drain3
echo "drain3 ready: NIXTEST_DRAIN3_PYTHON=$venv/bin/python"
