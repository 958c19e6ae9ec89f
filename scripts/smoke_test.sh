#!/usr/bin/env bash
# The original's acceptance smoke test, rebuilt: register a user, then 10
# serial logins, each with its latency and PASS/FAIL.
#
#   BASE_URL=http://127.0.0.1:8080 scripts/smoke_test.sh
set -uo pipefail

base=${BASE_URL:-http://127.0.0.1:8080}
user="smoke_$(date +%s)_$$"
pass='Smoke!Test1'
fails=0

json='Content-Type: application/json'

code=$(curl -s -o /tmp/smoke.$$ -w '%{http_code}' -H "$json" \
       -d "{\"username\":\"$user\",\"password\":\"$pass\",\"email\":\"$user@example.com\"}" \
       "$base/api/auth/register")
if [ "$code" = 200 ]; then
    echo "register $user: PASS"
else
    echo "register $user: FAIL ($code $(cat /tmp/smoke.$$))"
    fails=$((fails + 1))
fi

for i in $(seq 1 10); do
    out=$(curl -s -o /tmp/smoke.$$ -w '%{http_code} %{time_total}' -H "$json" \
          -d "{\"username\":\"$user\",\"password\":\"$pass\"}" \
          "$base/api/auth/login")
    code=${out% *}
    ms=$(awk -v t="${out#* }" 'BEGIN { printf "%.1f", t * 1000 }')

    if [ "$code" = 200 ] && grep -q '"token":"' /tmp/smoke.$$; then
        echo "login $i: ${ms} ms PASS"
    else
        echo "login $i: ${ms} ms FAIL ($code $(cat /tmp/smoke.$$))"
        fails=$((fails + 1))
    fi
done

rm -f /tmp/smoke.$$

if [ $fails -eq 0 ]; then
    echo "smoke test: PASS"
else
    echo "smoke test: FAIL ($fails failures)"
    exit 1
fi
