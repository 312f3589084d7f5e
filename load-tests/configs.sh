# Sourced by suite.sh and profile.sh: the sluice configurations under test.
# Needs $sluice_threads and $mock_port set.

# Four tenants with two keys each; limits and budgets far above what the run
# can reach, so every filter runs its full path and none refuses.
tenants() {
  echo "tenants:"
  for t in 0 1 2 3; do
    cat <<YAML
  t$t:
    limits: {requests_per_minute: 1000000000, tokens_per_minute: 100000000000, concurrent_requests: 100000}
    budget: {limit_usd: 1000000000, period: monthly}
    keys:
YAML
    for k in 0 1; do
      echo "      - {id: t$t-k$k, key: sk-load-t$t-k$k, limits: {requests_per_minute: 1000000000, tokens_per_minute: 100000000000, concurrent_requests: 100000}, budget: {limit_usd: 1000000000}}"
    done
  done
}
common() {
  cat <<YAML
server:
  threads: $sluice_threads
upstreams:
  mock: {base_url: "http://127.0.0.1:$mock_port/v1", api_key: sk-load}
models:
  - {name: gpt-4o-mini, upstream: mock}
  - {name: fast, upstream: mock, upstream_model: gpt-4o-mini}
  - {name: "*", upstream: mock}
YAML
}
