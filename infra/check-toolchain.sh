#!/usr/bin/env bash
# What vigil needs outside Python: Java 17+ for the Kafka broker, Maven to fetch its jars once.
# As root on Debian (CI, a fresh box) the missing ones are installed; otherwise we say what to do.
set -euo pipefail

missing=()
if command -v java >/dev/null 2>&1; then
  major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]}')
  if [[ "${major:-0}" -lt 17 ]]; then missing+=(openjdk-17-jre-headless); fi
else
  missing+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)

if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "vigil needs ${missing[*]}: install Java 17+ and Maven, then retry" >&2
  exit 1
fi
