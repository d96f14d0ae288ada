#!/usr/bin/env bash
# Install Debian packages that are missing, and nothing else: the project's real components
# (nginx, prometheus, promtool, exporters, HypoPG, stress-ng) come from Debian, installed here
# on a fresh machine. `apt-get update` runs once, only when a package is not found.
# Usage: scripts/ensure-debs.sh PACKAGE [PACKAGE ...]
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
echo "ensure-debs: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Starting daemons is the tests' job, not the package's: keep postinst from launching them.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
trap '((made_policy)) && rm -f "$policy"' EXIT
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
