#!/bin/sh
# Rebuilds view/view.js (the page's script with the mqtt client bundled in) from the lockfile's packages.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run build
