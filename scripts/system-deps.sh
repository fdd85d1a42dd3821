#!/usr/bin/env bash
# Debian packages that some components use (legacy .doc, OCR, WordNet, back translation) and the
# headless browser the report and UI tests render in (chromium).
# Installed when missing and we are root; otherwise the tests that need them skip with the reason.
set -u
PKGS="catdoc antiword tesseract-ocr tesseract-ocr-eng wordnet-base wordnet-sense-index apertium apertium-eng-spa chromium"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root or no apt-get; missing:$missing (tests that need them will skip)" >&2
  exit 0
fi
echo "system-deps: installing$missing" >&2
(apt-get install -y --no-install-recommends $missing >/dev/null 2>&1) || \
  (apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends $missing >/dev/null 2>&1) || \
  echo "system-deps: could not install$missing (tests that need them will skip)" >&2
exit 0
