#!/bin/bash
F=${FERRY:-target/release/ferry}; F=$(realpath "$F")
B=$(mktemp -d); cd $B
echo "mango tree by the well" > pp
python3 -c "
import json
with open('$B/rows.jsonl','w') as f:
    for i in range(100000):
        f.write(json.dumps({'id':'r%06d'%i,'household':'h%05d'%(i%20000),'village':'v%d'%(i%37),'nets':i%5,'date':'2026-11-%02d'%(1+i%28)})+'\n')
"
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(echo "$(date +%s.%N)-$s" | bc)"; }
for mode in plain locked; do
  rm -rf $B/$mode; mkdir -p $B/$mode/stick; cd $B/$mode
  extra=""; [ $mode = locked ] && export FERRY_PASSPHRASE_FILE=$B/pp && extra="--passphrase"
  $F --home hq init --name hq --create Bench $extra >/dev/null
  code=$($F --home hq invite --out a.invite --label a | grep ^code: | awk '{print $2}')
  FERRY_INVITE_CODE=$code $F --home a init --join a.invite $extra >/dev/null
  $F --home a sync stick >/dev/null 2>&1; $F --home hq sync stick >/dev/null 2>&1; $F --home a sync stick >/dev/null 2>&1
  l=$(t $F --home hq load dist ../rows.jsonl)
  e=$(t $F --home hq export stick)
  i=$(t $F --home a import stick)
  n1=$(t $F --home a sync stick); n2=$(t $F --home a sync stick)
  st=$(t $F --home a status)
  echo "$mode: load100k=${l}s export=${e}s import=${i}s sync(after)=${n1}s sync-nothing-to-do=${n2}s status=${st}s db=$(du -k a/ferry.db | cut -f1)KiB"
  unset FERRY_PASSPHRASE_FILE; cd $B
done
