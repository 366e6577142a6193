#!/usr/bin/env bash
# Install Debian's Nsight Systems CLI (2022.4, package nsight-systems in non-free).
# It exports .nsys-rep/.qdrep reports written by nsys <= 2022.x to SQLite; the nsys
# reader's @pytest.mark.nsys tests use it.  Idempotent and quiet; run as root.
#
# nsight-systems-target depends on libcuda1 (non-free), which needs nvidia-support
# from contrib: both components are added.  No GPU or kernel module is needed to
# export; recommends (dkms, nvidia-smi ...) are not installed.
set -euo pipefail

if command -v nsys >/dev/null 2>&1; then
    exit 0
fi

sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources" ]; then
    for comp in non-free contrib; do
        sed -i -E "/^Components:/{/(^|[[:space:]])${comp}([[:space:]]|\$)/!s/\$/ ${comp}/}" "$sources"
    done
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends nsight-systems >/dev/null
command -v nsys >/dev/null
