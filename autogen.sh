#!/bin/sh
# Regenerates configure and the Makefile templates (not committed).
set -e
cd "$(dirname "$0")"
mkdir -p m4 build-aux
autoreconf --install --force --warnings=all
