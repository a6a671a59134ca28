#!/usr/bin/env bash
# Regenerates demo_call.wav (8 kHz G.711 mu-law, the telephone path) from demo_call.txt with
# Debian's espeak-ng and sox. Output is byte-identical run to run (sox -D: no random dither).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sox -D -n -r 16000 -c 1 -b 16 "$tmp/lead.wav" trim 0 0.6
sox -D -n -r 16000 -c 1 -b 16 "$tmp/gap.wav" trim 0 1.2
parts=("$tmp/lead.wav")
i=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  espeak-ng -v en-us -s 160 -w "$tmp/raw$i.wav" "$line"
  sox -D "$tmp/raw$i.wav" -r 16000 -c 1 -b 16 "$tmp/s$i.wav"
  parts+=("$tmp/s$i.wav" "$tmp/gap.wav")
  i=$((i + 1))
done < demo_call.txt
sox -D "${parts[@]}" "$tmp/call16.wav"
sox -D "$tmp/call16.wav" -r 8000 -e u-law -b 8 demo_call.wav
