#!/bin/bash
set -u
F=${FERRY:-target/release/ferry}; F=$(realpath "$F")
B=$(mktemp -d); rm -rf $B; mkdir -p $B/stick; cd $B
$F --home hq init --name hq --create "Relief distributions" >/dev/null
for i in 1 2 3 4 5 6; do code=$($F --home hq invite --out c$i.invite --label clinic-$i | grep ^code: | awk '{print $2}'); FERRY_INVITE_CODE=$code $F --home c$i init --join c$i.invite >/dev/null; done
python3 -c "
import json
with open('$B/rows.jsonl','w') as f:
    for i in range(100000):
        f.write(json.dumps({'id':'r%06d'%i,'household':'h%05d'%(i%20000),'village':'v%d'%(i%37),'nets':i%5,'date':'2026-11-%02d'%(1+i%28)})+'\n')
"
t0=$(date +%s.%N); $F --home c1 load dist rows.jsonl | tail -1; echo "load: $(echo "$(date +%s.%N)-$t0" | bc)s"
round() { for h in "$@"; do s=$(date +%s.%N); out=$($F --home $h sync stick 2>&1); rc=$?; echo "$h rc=$rc $(echo "$(date +%s.%N)-$s" | bc)s $(echo "$out" | grep -E '^(wrote|REFUSED|waiting|skipped.*removed)' | cut -c1-150 | tr '\n' '|')"; done; }
echo "== first round (everyone)"; round c1 hq c2 c3 c4 c5 c6 hq c1
echo "== c6 goes away; hq removes clinic-5"
$F --home hq member remove clinic-5 --reason "laptop stolen"
for i in 1 2 3 4 5; do $F --home c$i put dist new-c$i nets=1 >/dev/null; done
$F --home hq put dist new-hq nets=2 >/dev/null
round hq c1 c2 c3 c4 c5 hq c1 c2 c3 c4 c5 hq
echo "== c6 returns weeks later"
$F --home c6 put dist new-c6 nets=3 >/dev/null
round c6 hq c1 c2 c3 c4 c6 hq c6
echo "== compare"
for h in hq c1 c2 c3 c4 c6 c5; do echo "$h $($F --home $h list dist | md5sum | cut -c1-8) records=$($F --home $h list dist | wc -l) epoch-key-records=$($F --home $h list dist | grep -c new-)"; done
$F --home hq status | sed -n 1,4p
ls -la stick/ferry/*/ | tail -n +2 | awk '{print $5, $9}'
