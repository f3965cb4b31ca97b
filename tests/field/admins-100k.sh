#!/bin/bash
# More than one admin in a messy field deployment (issue 13): 100,000 records loaded from a
# spreadsheet, seven laptops, two admins that invite on the same day without meeting, one
# laptop away for weeks, the second admin removing a stolen laptop while the founding
# laptop is away (it changes the key itself: bundle version 9), and the founding laptop
# coming back and sealing with that key. Prints each sync's time and outcome,
# then compares every laptop's records.
#   cargo build --release -p ferry-cli && tests/field/admins-100k.sh
set -u
F=${FERRY:-target/release/ferry}; F=$(realpath "$F")
B=$(mktemp -d); rm -rf $B; mkdir -p $B/stick; cd $B
code() { grep ^code: | awk '{print $2}'; }
$F --home hq init --name hq --create "Relief distributions" >/dev/null
for i in 1 2 3 4 5 6; do c=$($F --home hq invite --out c$i.invite --label clinic-$i | code); FERRY_INVITE_CODE=$c $F --home c$i init --join c$i.invite >/dev/null; done
python3 -c "
import json
with open('$B/rows.jsonl','w') as f:
    for i in range(100000):
        f.write(json.dumps({'id':'r%06d'%i,'household':'h%05d'%(i%20000),'village':'v%d'%(i%37),'nets':i%5,'date':'2026-11-%02d'%(1+i%28)})+'\n')
"
t0=$(date +%s.%N); $F --home c1 load dist rows.jsonl | tail -1; echo "load: $(echo "$(date +%s.%N)-$t0" | bc)s"
round() { for h in "$@"; do s=$(date +%s.%N); out=$($F --home $h sync stick 2>&1); rc=$?; echo "$h rc=$rc $(echo "$(date +%s.%N)-$s" | bc)s $(echo "$out" | grep -E '^(wrote|REFUSED|waiting|skipped.*removed)' | cut -c1-150 | tr '\n' '|')"; done; }
echo "== first round (everyone)"; round c1 hq c2 c3 c4 c5 c6 hq c1 c2 c3 c4 c5 c6
echo "== hq promotes clinic-1"; $F --home hq member promote clinic-1; round hq c1
echo "== same day, no meeting: each admin invites one laptop; c6 goes away"
c=$($F --home hq invite --out n1.invite --label new-hq | code); FERRY_INVITE_CODE=$c $F --home n1 init --join n1.invite | head -1
c=$($F --home c1 invite --out n2.invite --label new-c1 | code); FERRY_INVITE_CODE=$c $F --home n2 init --join n2.invite | head -1
$F --home n1 put dist n1-first nets=1 >/dev/null; $F --home n2 put dist n2-first nets=1 >/dev/null
round n2 c2 n1 c1 hq c3 c4 c5 n1 n2 c1 c2 c3 c4 c5 hq
echo "== the founding laptop is away; clinic-1 removes clinic-5 (stolen) and sets a rule"
$F --home c1 member remove clinic-5 --reason "stolen at the market"
$F --home c1 rule set dist nets max
$F --home c5 put dist stolen-write nets=9 >/dev/null
for i in 2 3 4; do $F --home c$i put dist after-c$i nets=1 >/dev/null; done
round c1 c2 c3 c4 c5 n1 n2 c1 c2 c3 c4 n1 n2
echo "== the founding laptop returns: it learns clinic-1's key and seals with it"
$F --home hq put dist hq-back nets=2 >/dev/null
round hq c1 c2 c3 c4 n1 n2 c5 hq c1 c2 c3 c4 n1 n2
echo "== c6 returns weeks later"
$F --home c6 put dist c6-late nets=3 >/dev/null
round c6 hq c1 c6 c2 c3 c4 n1 n2 hq c6
echo "== compare (c5 was removed)"
for h in hq c1 c2 c3 c4 c6 n1 n2 c5; do echo "$h $($F --home $h list dist | md5sum | cut -c1-8) records=$($F --home $h list dist | wc -l) stolen-write=$($F --home $h list dist | grep -c stolen-write) after-removal=$($F --home $h list dist | grep -c after-c) rule=$($F --home $h rule list | grep -c max)"; done
$F --home c6 member list
