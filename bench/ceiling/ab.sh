#!/bin/bash
# usage: ab.sh ROUNDS name:port ...   (targets already running; pids looked up by port)
# Saturation (wrk -t1 -c64, DUR s after a 2 s warm-up) and paced (bench/paced.lua, 2000 req/s)
# CPU per 100k requests of each target, interleaved, after waiting for an idle second.
# nginx: its workers are found by port, its master through NGINX_PIDFILE.
ROUNDS=$1; shift
cpu() { local t=0; for p in $1; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
idle() { # true when the machine was >= 90 % idle over the last second
  local a b; a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local tot=0 i; for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  [ $(( (b[4]-a[4]) * 100 / (tot>0?tot:1) )) -ge 90 ]; }
pids_of() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' '; }
for r in $(seq $ROUNDS); do
 for v in "$@"; do
  name=${v%%:*}; port=${v#*:}
  pids=$(pids_of $port)
  # the nginx master does not hold the listening socket: add it by its pid file
  [ "$name" = nginx ] && pids="$pids $(cat "${NGINX_PIDFILE:?nginx proxy pid file}")"
  until idle; do :; done
  wrk -t1 -c64 -d2s http://127.0.0.1:$port/ >/dev/null
  b=$(cpu "$pids"); out=$(wrk -t1 -c64 -d${DUR:-8}s --latency http://127.0.0.1:$port/); a=$(cpu "$pids")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}'); n=$(echo "$out" | awk '/requests in/ {print $1}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}'); p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  b2=$(cpu "$pids"); out2=$(RATE=2000 CONNS=20 wrk -t1 -c20 -d${DUR:-8}s -s "$(dirname "$0")/../paced.lua" http://127.0.0.1:$port/); a2=$(cpu "$pids")
  n2=$(echo "$out2" | awk '/requests in/ {print $1}')
  echo "r$r $name sat: $rps req/s p50 $p50 p99 $p99 cpu/100k $(awk -v t=$((a-b)) -v n=$n 'BEGIN{printf "%.2f", t/100/n*100000}') | paced: n=$n2 cpu/100k $(awk -v t=$((a2-b2)) -v n=$n2 'BEGIN{printf "%.2f", t/100/n*100000}')"
 done
done
