# Sourced by the shell benches (cluster-e.sh, dashboard-cost.sh) from the repository's
# root: builds the release broker and the load generator ($LOAD), raises the open-file
# limit, makes a work directory ($work), and stops every process in $pids (and
# $redis_pid, if set) at exit.
cargo build --release --bin rustorium-broker
LOAD=$(cargo bench --bench load --no-run 2>&1 | sed -n 's/.*Executable benches\/load.rs (\(.*\))/\1/p')
[ -x "$LOAD" ] || { echo "the load generator was not built" >&2; exit 1; }
ulimit -n 20000

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
