# Helpers shared by the bench-*.sh scripts (sourced, not run).

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most; fails after).
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# stop PID: terminates a process this script started and reaps it (nothing if PID is empty).
stop() { if [[ -n "${1:-}" ]]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }
# cpu_ticks PID: the process's CPU time so far (user + system), in clock ticks (getconf CLK_TCK per second).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
