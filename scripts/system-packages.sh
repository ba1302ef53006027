#!/usr/bin/env bash
# Installs the Debian packages the tests run, each only when missing, with one apt-get update for all
# (run by `pnpm test` and by .ci/run). Without root or passwordless sudo it says what to install and
# lets the tests run anyway (those needing a missing package then fail, naming it).
# - redis-server: the tests also start private redis-server processes (a Redis that restarts empty,
#   refuses the password or goes away), so the binary must be there even when a Redis already answers.
# - postfix, python3-aiosmtpd: real SMTP peers. The tests start private instances of their own
#   (test/support/postfix.ts, aiosmtpd.ts), never the system's Postfix; debconf's "No configuration"
#   installs Postfix without setting up or starting the system's instance.
# - python3-django: Django's mail backend, the baseline the benchmark compares against.
# - python3-dkim: dkimpy, the independent verifier of the DKIM signatures (test/dkim-verify.test.ts).
# - chromium: the headless browser of the dashboard's browser tests (test/support/browser.ts, driven by
#   puppeteer-core, which never downloads a browser of its own); not when MAILROOM_CHROMIUM names another.
# Debian's python3, not the first python3 on PATH (a pyenv one does not see Debian's modules).
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
/usr/bin/python3 -c 'import django' >/dev/null 2>&1 || missing+=(python3-django)
/usr/bin/python3 -c 'import dkim' >/dev/null 2>&1 || missing+=(python3-dkim)
[ -n "${MAILROOM_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ] || missing+=(chromium)
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=''
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null || ! command -v apt-get >/dev/null 2>&1; then
    echo "[system-packages] missing: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 0
  fi
  SUDO='sudo -n'
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[system-packages] missing: ${missing[*]} (not a Debian system: install their equivalents)" >&2
  exit 0
fi
echo "[system-packages] installing Debian packages: ${missing[*]}" >&2
echo 'postfix postfix/main_mailer_type select No configuration' | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
