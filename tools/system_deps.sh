#!/usr/bin/env bash
# Debian packages that some tests need beside the Python lock: a headless browser for the web
# page test, Orthanc with its DICOMweb plugin for the PACS round trip, and dicom3tools' dciodvfy
# for validating DICOM SEG/SR. Installs only what is missing; needs root (CI runs as root).
# Without them those tests skip with a reason naming the missing program.
set -euo pipefail
PACKAGES=(chromium chromium-driver orthanc orthanc-dicomweb dicom3tools)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system deps: all present (${PACKAGES[*]})"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "system deps: missing ${missing[*]}; install them with apt-get as root (their tests will skip)" >&2
  exit 0
fi
echo "system deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
