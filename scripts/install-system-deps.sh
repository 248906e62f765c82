#!/usr/bin/env bash
# Debian packages Countersign needs on one machine:
#   install-system-deps.sh server    libsndfile (FLAC -> WAV for evidence reads), the IPA Gothic font
#                                    (the bundle's Japanese custody report); no audio stack
#   install-system-deps.sh recorder  PortAudio (capture) and libsndfile (FLAC) for a counter PC
#   install-system-deps.sh [dev]     everything: the above, plus PulseAudio + espeak-ng + sox for
#                                    the real-audio tests and the demo, poppler-utils (pdftotext for
#                                    the report tests), chromium + chromium-driver (the kiosk
#                                    and console browser tests) (the default: `make test`)
# The officer's laptop (`countersign[client]`) needs no Debian package.
set -euo pipefail
role="${1:-dev}"
case "$role" in
  server) packages=(libsndfile1 fonts-ipafont-gothic) ;;
  recorder) packages=(libportaudio2 libsndfile1) ;;
  dev) packages=(libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins espeak-ng sox fonts-ipafont-gothic poppler-utils chromium chromium-driver) ;;
  *)
    echo "usage: $0 [server|recorder|dev]   (default: dev)" >&2
    exit 2
    ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages ($role): ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: not root; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
