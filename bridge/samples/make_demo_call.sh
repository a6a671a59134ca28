#!/usr/bin/env bash
# Regenerates the samples from their scripts with Debian's espeak-ng and sox (espeak-ng 1.51 and SoX 14.4.2 on
# Debian 12). Output is byte-identical run to run (sox -D: no random dither).
#
# demo_call.wav (8 kHz G.711 mu-law, the telephone path): one caller reading demo_call.txt.
#
# two_party_call.wav (8 kHz 16-bit PCM, 2 channels): a support call from two_party_call.txt, one turn a
# line ("caller: ..." or "agent: ..."). The caller (espeak-ng en-us) is the left channel, the carrier's
# inbound track; the agent (en-us+f3, a female variant, higher pitch) the right channel, the outbound track.
# Turns take their turn: while one speaks the other channel is digital silence (zero samples), with a pause
# between turns. Every turn starts and ends on a 20 ms frame (its audio padded with silence). The script then
# writes each turn's place in the WAV at the start of its line, "START END speaker: text" in seconds (START
# is the turn's first sample, END one past its last).
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

# The two-party call, built at 8 kHz so that every length is a whole number of 20 ms frames.
rate=8000
frame=160
lead=4800  # 0.6 s before the first turn
pause=6400 # 0.8 s between turns (and after the last)
quiet() { sox -D -r "$rate" -c 1 -n -b 16 "$2" trim 0 "$1s"; }  # -r before -n: the null input's rate
seconds() { awk -v n="$1" -v r="$rate" 'BEGIN { printf "%.2f", n / r }'; }
quiet "$lead" "$tmp/lead8.wav"
quiet "$pause" "$tmp/pause8.wav"
left=("$tmp/lead8.wav")
right=("$tmp/lead8.wav")
: > "$tmp/turns.txt"
pos=$lead
i=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  line=$(printf '%s\n' "$line" | sed -E 's/^[0-9]+\.[0-9]+ [0-9]+\.[0-9]+ //')  # drop the times of a last run
  who=${line%%: *}
  text=${line#*: }
  case "$who" in
    caller) voice=en-us ;;
    agent) voice=en-us+f3 ;;
    *) echo "two_party_call.txt: a turn starts with 'caller: ' or 'agent: ', not: $line" >&2; exit 1 ;;
  esac
  espeak-ng -v "$voice" -s 160 -w "$tmp/traw$i.wav" "$text"
  sox -D "$tmp/traw$i.wav" -r "$rate" -c 1 -b 16 "$tmp/u$i.wav"
  n=$(soxi -s "$tmp/u$i.wav")
  sox -D "$tmp/u$i.wav" "$tmp/t$i.wav" pad 0 "$(((frame - n % frame) % frame))s"
  n=$(soxi -s "$tmp/t$i.wav")
  quiet "$n" "$tmp/q$i.wav"
  if [ "$who" = caller ]; then
    left+=("$tmp/t$i.wav" "$tmp/pause8.wav")
    right+=("$tmp/q$i.wav" "$tmp/pause8.wav")
  else
    left+=("$tmp/q$i.wav" "$tmp/pause8.wav")
    right+=("$tmp/t$i.wav" "$tmp/pause8.wav")
  fi
  printf '%s %s %s: %s\n' "$(seconds "$pos")" "$(seconds $((pos + n)))" "$who" "$text" >> "$tmp/turns.txt"
  pos=$((pos + n + pause))
  i=$((i + 1))
done < two_party_call.txt
sox -D "${left[@]}" "$tmp/left.wav"
sox -D "${right[@]}" "$tmp/right.wav"
sox -D -M "$tmp/left.wav" "$tmp/right.wav" -e signed-integer -b 16 two_party_call.wav
mv "$tmp/turns.txt" two_party_call.txt
