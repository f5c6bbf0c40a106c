#!/bin/bash
# Prints manifests of k8s/ with their placeholders filled in, for `kubectl apply -f -` (README.md
# "Kubernetes"):
#
#   RAY_IMAGE_DIGEST        sha256:<64 hex>, the digest of rayproject/ray:2.60.0-py311-gpu
#   POSTGRES_IMAGE_DIGEST   sha256:<64 hex>, the digest of postgres:16
#   ACTIONLAB_ZIP           the RayJobs' working_dir (k8s/*-job.yaml only): the repository at the
#                           commit the pods install, e.g. https://github.com/<you>/actionlab/archive/<commit>.zip
#
# Every image is pinned by digest, so a pod runs the image it was checked with, however the tag
# moves. Look the digests up once, where the registry is reachable, e.g.
#   crane digest rayproject/ray:2.60.0-py311-gpu      (or: docker buildx imagetools inspect <image>)
# A value missing or malformed (a digest not sha256:<64 hex>), or a placeholder left in the output,
# is an error: nothing is printed, and `kubectl apply` gets an empty input.
#
# Usage: k8s/render.sh FILE.yaml... | kubectl apply -f -
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: k8s/render.sh FILE.yaml... | kubectl apply -f -" >&2
  exit 2
fi

placeholders=(RAY_IMAGE_DIGEST POSTGRES_IMAGE_DIGEST ACTIONLAB_ZIP)
out=""
for file in "$@"; do
  text=$(<"$file")
  for name in "${placeholders[@]}"; do
    case $text in *"$name"*) ;; *) continue ;; esac
    value=${!name:-}
    if [ "$name" = ACTIONLAB_ZIP ]; then
      pattern='^https://[^[:space:]|]+\.zip$'
      expected="an https URL of a .zip"
    else
      pattern='^sha256:[0-9a-f]{64}$'
      expected="sha256:<64 hex digits>"
    fi
    if [[ ! $value =~ $pattern ]]; then
      echo "render.sh: $file needs $name=$expected (got '${value}'); see k8s/render.sh's header" >&2
      exit 2
    fi
    text=${text//"$name"/"$value"}
  done
  out+=$'---\n'"$text"$'\n'
done
for name in "${placeholders[@]}"; do
  if [[ $out == *"$name"* ]]; then  # a value that names a placeholder itself
    echo "render.sh: $name is still in the output" >&2
    exit 2
  fi
done
printf '%s' "$out"
