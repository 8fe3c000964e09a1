#!/usr/bin/env bash
# Installs what `make test-kafka` needs besides `make deps`: a Java 17+ runtime and Maven, which
# resolves Apache Kafka's jars from Maven Central. Safe to run again: every step checks first.
set -euo pipefail

say() { printf '  · %-11s %s\n' "$1" "$2" >&2; }

java_ok() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null 2>&1 || return 1
  local major
  major="$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [ -n "$major" ] && [ "$major" -ge 17 ]
}

missing=()
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    say java "installing Debian's ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Apache Kafka needs ${missing[*]}: run 'sudo apt-get install ${missing[*]}'," \
         "or set KAFKA_BOOTSTRAP_SERVERS to a cluster you run." >&2
    exit 1
  fi
fi
