#!/usr/bin/env bash
# Proves examples/prometheus/alerts.yml against a real gateway: promtool
# checks the rules, then evaluates them (`promtool test rules`) over two
# scrapes of a gateway started as `make run` starts it, serving HTTPS with a
# certificate valid for a year, one minute apart in the test's time: a
# healthy one, and one taken after a strategy threw in a handler, another
# overran its CPU budget, the kill switch went on, a SIGHUP put a
# certificate valid for three days in service, a second SIGHUP's key was
# refused and a request came with a token nobody has (the test's own calls
# carry an admin token). The healthy scrape raises no alert; the second
# raises exactly the six expected, with the gateway's own labels (strategy,
# hash, reason).
# A rule that reads a series the gateway does not export fails here.
#
# Environment: STRATD_BINARY and STRATD_SOURCE_DIR (set by ctest);
# STRATD_TEST_KEEP=1 keeps the temporary directory.
set -euo pipefail

# shellcheck source=tests/scripts/gateway.sh
. "$(dirname "${BASH_SOURCE[0]}")/gateway.sh"
rules=$source_dir/examples/prometheus/alerts.yml
for tool in curl jq promtool openssl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (scripts/install-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/stratd-alerts-XXXXXX")
cleanup() {
  stop_server || true
  if [ -z "${STRATD_TEST_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

promtool check rules "$rules"

# certificate NAME DAYS: a self-signed certificate for 127.0.0.1 and its key
tls=$work/tls
mkdir -p "$tls"
certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$2" \
    -keyout "$tls/$1.key" -out "$tls/$1.crt" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
}
certificate year 365
certificate days 3
certificate other 365
cp "$tls/year.crt" "$tls/gateway.crt"
cp "$tls/year.key" "$tls/gateway.key"
cat "$tls/year.crt" "$tls/days.crt" >"$tls/trusted.pem"
export CURL_CA_BUNDLE=$tls/trusted.pem
# An admin token, which every curl of the test sends (its configuration
# file); `curl -q` reads none, for the request with a token nobody knows.
secret=alert-test-$$-$RANDOM
mkdir -p "$work/curl"
printf 'header = "Authorization: Bearer %s"\n' "$secret" >"$work/curl/.curlrc"
export CURL_HOME=$work/curl
printf 'http:\n  tls_certificate: %s\n  tls_key: %s\nauth:\n  tokens:\n    - {name: ops, sha256: %s, role: admin}\n' \
  "$tls/gateway.crt" "$tls/gateway.key" "$(printf %s "$secret" | sha256sum | cut -d' ' -f1)" \
  >"$work/stratd.yml"
gateway_start "$work" --config "$work/stratd.yml"
[ "$scheme" = https ] || { echo "error: the gateway does not serve HTTPS" >&2; exit 1; }
base=https://127.0.0.1:$port

# scrape FILE: the metrics into FILE, and the scrape's time into FILE.time
scrape() {
  date +%s >"$1.time"
  curl -sf "$base/metrics" >"$1"
}
scrape "$work/healthy.prom"

# ------------------------------------------------------------ make trouble
# upload NAME HANDLER-BODY: a strategy on Trade events; prints its hash
upload() {
  local source
  source="module.exports = { metadata: { name: '$1', displayName: '$1', description: 'Trouble.',
    tag: 'v1.0.0', events: ['Trade'], config: [] },
  create() { let n = 0; return { onTrade() { n++; $2 } }; } };"
  jq -n --arg s "$source" '{source: $s}' | curl -sf -XPOST "$base/strategies/modules" -d @- \
    | jq -er .module.hash
}
run() { # run ID STRATEGY
  curl -sf -XPOST "$base/strategy/instances" -d "{\"id\": \"$1\",
    \"strategy\": {\"selector\": \"$2\", \"config\": {}},
    \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}" >/dev/null
  curl -sf -XPOST "$base/strategy/instances/$1/start" | jq -e '.status == "running"' >/dev/null
}
thrower=$(upload thrower "if (n === 1) throw new Error('first trade');")
upload spinner "for (;;) {}" >/dev/null
run throws thrower
run spins spinner
curl -sf "$base/risk/limits" | jq '.limits.killSwitchEnabled = true | .limits' \
  | curl -sf -XPUT "$base/risk/limits" -d @- | jq -e '.status == "applied"' >/dev/null

for _ in $(seq 1 600); do
  reason=$(curl -sf "$base/strategy/instances/spins" | jq -r '.stopReason // empty')
  errors=$(curl -sf "$base/metrics" | sed -n 's/^stratd_handler_errors_total{strategy="thrower",.*} //p')
  [ "$reason" = cpuBudget ] && [ "${errors:-0}" = 1 ] && break
  sleep 0.1
done
[ "$reason" = cpuBudget ] || { echo "error: spins was not stopped for its CPU budget (stopReason '$reason')" >&2; exit 1; }
[ "${errors:-0}" = 1 ] || { echo "error: thrower's error was not counted ('$errors')" >&2; exit 1; }

# log_waits TEXT: waits for TEXT in the gateway's log
log_waits() {
  for _ in $(seq 1 600); do
    grep -qF "$1" "$work/server.log" && return 0
    sleep 0.1
  done
  echo "error: the gateway never logged '$1'; its log ends with:" >&2
  tail -n 20 "$work/server.log" >&2
  exit 1
}
cp "$tls/days.crt" "$tls/gateway.crt"
cp "$tls/days.key" "$tls/gateway.key"
kill -HUP "$server_pid"
log_waits "SIGHUP: now serving"
cp "$tls/other.key" "$tls/gateway.key"
kill -HUP "$server_pid"
log_waits "still serving the TLS certificate"
status=$(curl -q -s -o /dev/null -w '%{http_code}' --cacert "$tls/trusted.pem" \
  -H 'Authorization: Bearer not-a-token-anyone-has' "$base/strategy/instances")
[ "$status" = 401 ] || { echo "error: a token nobody has got $status, not 401" >&2; exit 1; }
scrape "$work/troubled.prom"

# Every series the rules name is one the gateway exports, so no rule can
# sit quiet because a name drifted.
grep -o 'stratd_[a-z_]*' "$rules" | sed -E 's/_(bucket|sum|count)$//' | sort -u \
  | while read -r family; do
    grep -q "^# TYPE $family " "$work/troubled.prom" \
      || { echo "error: alerts.yml names $family, which the gateway does not export" >&2; exit 1; }
  done

# ------------------------------------------------------------ evaluate
# promtool's clock starts at 0 and the scrapes were taken at 0m and 1m of
# it: the certificate's end is moved by as much, so that the time left to it
# is the same in the test as at the scrape.
shift_expiry() { # shift_expiry FILE MINUTE
  local now
  now=$(cat "$1.time")
  awk -v now="$now" -v at="$(($2 * 60))" '
    $1 == "stratd_tls_certificate_expiry_timestamp_seconds" { $2 = sprintf("%.0f", $2 - now + at) }
    { print }' "$1" >"$1.shifted"
  mv "$1.shifted" "$1"
}
shift_expiry "$work/healthy.prom" 0
shift_expiry "$work/troubled.prom" 1
# Each series of either scrape, with the target labels Prometheus would
# add: the healthy value at 0m, the troubled one from 1m to 10m ("_" where
# a scrape lacks the series).
series() {
  awk '
    FNR == 1 { file++ }
    /^#/ || NF < 2 { next }
    {
      value = $NF; name = substr($0, 1, length($0) - length(value) - 1)
      if (value !~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/) next
      if (!(name in seen)) { seen[name] = 1; order[++n] = name }
      v[file, name] = value
    }
    END {
      for (i = 1; i <= n; i++) {
        s = order[i]; gsub(/\047/, "\047\047", s)
        if (index(s, "{")) sub(/\{/, "{job=\"stratd\",instance=\"gw\",", s)
        else s = s "{job=\"stratd\",instance=\"gw\"}"
        line = ((1, order[i]) in v) ? v[1, order[i]] : "_"
        for (t = 1; t <= 10; t++) line = line " " (((2, order[i]) in v) ? v[2, order[i]] : "_")
        printf "      - series: \047%s\047\n        values: \047%s\047\n", s, line
      }
    }' "$work/healthy.prom" "$work/troubled.prom"
}
quiet() { # quiet TIME ALERT...: none of the alerts at TIME
  local t=$1 a
  shift
  for a in "$@"; do printf '      - eval_time: %s\n        alertname: %s\n        exp_alerts: []\n' "$t" "$a"; done
}
mapfile -t all < <(sed -n 's/^ *- alert: //p' "$rules")
mapfile -t others < <(printf '%s\n' "${all[@]}" \
  | grep -vx 'StratdInstanceFailed\|StratdHandlerErrors\|StratdKillSwitchOn\|StratdUnknownTokens\|StratdTLSCertificate.*')
{
  printf 'rule_files:\n  - %s\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n' "$rules"
  series
  printf '    alert_rule_test:\n'
  quiet 0m "${all[@]}"
  quiet 3m "${others[@]}"
  cat <<YAML
      - eval_time: 3m
        alertname: StratdInstanceFailed
        exp_alerts:
          - exp_labels: {severity: critical, reason: cpuBudget, job: stratd, instance: gw}
            exp_annotations:
              summary: "stratd stopped an instance: cpuBudget"
              description: "GET /strategy/instances lists the stopped instances with their stopReason and lastError; start one again once its cause is fixed."
      - eval_time: 3m
        alertname: StratdHandlerErrors
        exp_alerts:
          - exp_labels: {severity: warning, strategy: thrower, hash: "$thrower", job: stratd, instance: gw}
            exp_annotations:
              summary: "Strategy thrower throws in its handlers"
              description: "Revision $thrower of thrower threw in a handler or timer in the last 10 minutes; the gateway's log names the instance, the handler and the error."
      - eval_time: 3m
        alertname: StratdKillSwitchOn
        exp_alerts:
          - exp_labels: {severity: warning, job: stratd, instance: gw}
            exp_annotations:
              summary: "The kill switch refuses every new order"
              description: "killSwitchEnabled is on (PUT /risk/limits); no strategy can trade until it is turned off."
      - eval_time: 3m
        alertname: StratdUnknownTokens
        exp_alerts:
          - exp_labels: {severity: warning, reason: unknown, job: stratd, instance: gw}
            exp_annotations:
              summary: "Requests come with a bearer token the gateway does not know"
              description: "The gateway's log names each refused client's address, at most a line a second (\\"refused a request without a valid bearer token\\")."
      - eval_time: 3m
        alertname: StratdTLSCertificateExpiresSoon
        exp_alerts:
          - exp_labels: {severity: warning, job: stratd, instance: gw}
            exp_annotations:
              summary: "The gateway's HTTPS certificate ends within 14 days"
              description: "Write the renewed certificate and key over http.tls_certificate and http.tls_key, key last, and send the gateway SIGHUP: it serves them without a restart."
      - eval_time: 3m
        alertname: StratdTLSCertificateReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, job: stratd, instance: gw}
            exp_annotations:
              summary: "The gateway refused the TLS certificate and key a SIGHUP asked it to load"
              description: "It still serves the pair it served before; its log says at error level why the files were refused. Fix them and send SIGHUP again."
YAML
} >"$work/alerts.test.yml"
promtool test rules "$work/alerts.test.yml"

if ! stop_server; then
  echo "error: the gateway did not exit cleanly; its log ends with:" >&2
  tail -n 40 "$work/server.log" >&2
  exit 1
fi
echo "examples/prometheus/alerts.yml: quiet on a healthy gateway, the six expected alerts on a troubled one"
