#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when it is not there yet, and prints
# its path. Browser tests drive it with playwright-core (executablePath), headless.
# Shared by every browser test (dashboard, volunteer web app).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium (browser tests)" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
fi
echo /usr/bin/chromium
