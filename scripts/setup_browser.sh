#!/usr/bin/env bash
# Installs what the browser tests (tests/frontend/) need, idempotently:
#   - Debian's Chromium (/usr/bin/chromium); Playwright's own browser download is not used (it cannot
#     reach the internet here), the tests launch this binary instead;
#   - playwright-core from the npm registry into tests/frontend/node_modules (npm ci on the lock file).
#
#   scripts/setup_browser.sh          install whatever is missing
#   scripts/setup_browser.sh --check  only report; exit 1 if something is missing
#
# Environment: II_CHROMIUM  a Chromium/Chrome binary to use instead of /usr/bin/chromium (then no apt).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
front="$here/tests/frontend"
chromium="${II_CHROMIUM:-/usr/bin/chromium}"
log() { printf '[setup-browser] %s\n' "$*" >&2; }

have_browser() { [ -x "$chromium" ] && "$chromium" --version >/dev/null 2>&1; }
have_playwright() {
  [ -f "$front/node_modules/playwright-core/package.json" ] &&
    (cd "$front" && node -e "require('playwright-core')" >/dev/null 2>&1)
}

if [ "${1:-}" = "--check" ]; then
  ok=0
  have_browser && log "browser: $("$chromium" --version 2>/dev/null)" || { log "browser missing: $chromium"; ok=1; }
  have_playwright && log "playwright-core: installed" || { log "playwright-core missing in $front/node_modules"; ok=1; }
  command -v node >/dev/null && log "node: $(node --version)" || { log "node missing"; ok=1; }
  exit $ok
fi

command -v node >/dev/null || { log "Node.js (>= 20) is needed for playwright-core; install it first"; exit 2; }
command -v npm >/dev/null || { log "npm is needed for playwright-core; install it first"; exit 2; }

if have_browser; then
  log "browser present: $("$chromium" --version 2>/dev/null)"
elif [ -n "${II_CHROMIUM:-}" ]; then
  log "II_CHROMIUM=$chromium does not run"; exit 2
else
  log "installing Debian's chromium"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  have_browser || { log "chromium did not install"; exit 2; }
  log "installed: $("$chromium" --version 2>/dev/null)"
fi

if have_playwright; then
  log "playwright-core present"
else
  log "installing playwright-core (npm ci in tests/frontend)"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: never fetch a browser; the tests use Debian's chromium.
  (cd "$front" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  have_playwright || { log "playwright-core did not install"; exit 2; }
fi
log "ready"
