#!/usr/bin/env bash
# A local Redis Cluster for the tests (3 masters + 3 replicas as plain redis-server processes):
# `start` (idempotent: restarts nodes that died, creates the cluster on fresh dirs, waits until healthy),
# `stop` (kills the nodes, removes their dirs), `status` (CLUSTER NODES; exit 0 only when healthy).
# Environment: MAILROOM_CLUSTER_PORTS (default "7100 7101 7102 7103 7104 7105"), MAILROOM_CLUSTER_DIR
# (default /tmp/mailroom-redis-cluster, one <port> dir per node), MAILROOM_CLUSTER_TIMEOUT (seconds
# `start` waits for a healthy cluster, default 30). test/support/redis-cluster.ts drives it.
set -euo pipefail

read -r -a PORTS <<<"${MAILROOM_CLUSTER_PORTS:-7100 7101 7102 7103 7104 7105}"
CLUSTER_DIR="${MAILROOM_CLUSTER_DIR:-/tmp/mailroom-redis-cluster}"
HEALTH_TIMEOUT="${MAILROOM_CLUSTER_TIMEOUT:-30}"
HOST=127.0.0.1
SLOTS=16384
# Several test files (and .ci/run) may call `start` at once; a start that has to create the cluster
# twice takes about 2 × HEALTH_TIMEOUT, so waiting for the lock gets more than that.
LOCK_TIMEOUT=$((HEALTH_TIMEOUT * 4 + 60))

log() { printf '[redis-cluster] %s\n' "$*"; }
die() {
  printf '[redis-cluster] error: %s\n' "$*" >&2
  exit 1
}

NODES=${#PORTS[@]}
MASTERS=$((NODES / 2))
[ "$NODES" -ge 6 ] && [ $((NODES % 2)) -eq 0 ] ||
  die "MAILROOM_CLUSTER_PORTS must name an even number (>= 6) of ports, one master and one replica each: got '${PORTS[*]}'"
for port in "${PORTS[@]}"; do
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 55535 ] ||
    die "MAILROOM_CLUSTER_PORTS: '$port' is not a port (the cluster bus listens on port + 10000, so <= 55535)"
done

node_dir() { printf '%s/%s' "$CLUSTER_DIR" "$1"; }

# redis-cli bounded in time (a node stopped with SIGSTOP must not hang `start`), CRs stripped; prints
# nothing when the node does not answer (never fails: callers judge the output).
cli() {
  local port=$1
  shift
  timeout 3 redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null | tr -d '\r' || true
}

# `field NAME` reads NAME:value lines (INFO, CLUSTER INFO) on stdin and prints the value.
field() { awk -F: -v name="$1" '$1 == name { print $2; exit }'; }

# The pid of the node of ours on PORT: 0 = it runs (pid printed), 1 = none runs, 2 = the port is
# taken by another Redis (its dir printed instead).
node_pid() {
  local port=$1 dir pid served
  dir=$(node_dir "$port")
  pid=$(cli "$port" info server | field process_id)
  if [ -n "$pid" ]; then
    served=$(cli "$port" config get dir | sed -n 2p)
    if [ -d "$dir" ] && [ "$served" = "$(cd "$dir" && pwd -P)" ]; then
      printf '%s' "$pid"
      return 0
    fi
    printf '%s' "$served"
    return 2
  fi
  # Not answering but alive (stopped, or still loading): still ours, by its pid file and title.
  pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && ps -o args= -p "$pid" 2>/dev/null | grep -q "redis-server .*:$port"; then
    printf '%s' "$pid"
    return 0
  fi
  return 1
}

log_tails() {
  local port
  for port in "${PORTS[@]}"; do
    printf -- '--- %s/redis.log (last 8 lines)\n' "$(node_dir "$port")"
    tail -n 8 "$(node_dir "$port")/redis.log" 2>/dev/null || echo '(no log)'
  done
}

start_node() {
  local port=$1 dir
  dir=$(node_dir "$port")
  mkdir -p "$dir"
  # --cluster-node-timeout 2000: a failover in a test takes seconds, not the default 15 s + election.
  # --cluster-replica-validity-factor 0: a replica may always fail over, however long its link was down.
  # --repl-diskless-sync-delay 0: a restarted node resyncs at once, not after Redis's 5 s wait for
  # more replicas to share the transfer (there is only ever one per master here).
  # 9>&-: the daemon must not inherit the lock's fd (flock locks live as long as any copy of the fd).
  redis-server --daemonize yes --bind "$HOST" --port "$port" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 \
    --repl-diskless-sync-delay 0 \
    --save '' --appendonly no --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" 9>&- ||
    die "redis-server on port $port did not start: $(tail -n 5 "$dir/redis.log" 2>/dev/null)"
  local _
  for _ in $(seq 1 100); do
    [ "$(cli "$port" ping)" = PONG ] && return 0
    sleep 0.1
  done
  die "redis-server on port $port does not answer PING after 10 s; $dir/redis.log says:
$(tail -n 10 "$dir/redis.log" 2>/dev/null)"
}

# Starts every node that is not running; fails when a port is taken by a Redis that is not ours.
start_missing_nodes() {
  local port status served
  for port in "${PORTS[@]}"; do
    status=0
    served=$(node_pid "$port") || status=$?
    case $status in
      0) ;;
      1)
        if [ -f "$(node_dir "$port")/nodes.conf" ]; then
          log "node $port is not running: starting it again (it rejoins from its nodes.conf)"
        else
          log "starting node $port"
        fi
        start_node "$port"
        ;;
      *) die "port $port is taken by a Redis that is not this cluster's (its dir is '$served'); stop it or set MAILROOM_CLUSTER_PORTS" ;;
    esac
  done
}

kill_nodes() {
  local port pid pids=() _
  for port in "${PORTS[@]}"; do
    pid=$(node_pid "$port") || continue
    kill -KILL "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do
      { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; } && break
      sleep 0.1
    done
  done
}

remove_node_dirs() {
  local port
  for port in "${PORTS[@]}"; do rm -rf "$(node_dir "$port")"; done
  rm -f "$CLUSTER_DIR/create.log"
}

# Prints what keeps the cluster from being healthy, one line each; nothing when it is healthy:
# on every node cluster_state:ok, all slots served and the same view of who is master of which slots
# and who replicates whom (no node flagged fail/handshake/noaddr); MASTERS masters each with one
# replica; every replica's link to its master up. test/support/redis-cluster.ts checks the same.
health_problems() {
  local port info nodes view first_view='' first_port='' role link
  for port in "${PORTS[@]}"; do
    info=$(cli "$port" cluster info)
    if [ -z "$info" ]; then
      echo "node $port: no answer"
      continue
    fi
    [ "$(field cluster_state <<<"$info")" = ok ] || echo "node $port: cluster_state:$(field cluster_state <<<"$info")"
    [ "$(field cluster_slots_ok <<<"$info")" = "$SLOTS" ] ||
      echo "node $port: cluster_slots_ok:$(field cluster_slots_ok <<<"$info") (assigned $(field cluster_slots_assigned <<<"$info"))"
    [ "$(field cluster_known_nodes <<<"$info")" = "$NODES" ] ||
      echo "node $port: knows $(field cluster_known_nodes <<<"$info") nodes, not $NODES"
    nodes=$(cli "$port" cluster nodes)
    # CLUSTER NODES: <id> <ip:port@cport> <flags> <master id|-> <ping> <pong> <epoch> <link> <slot ranges...>
    view=$(awk -v masters="$MASTERS" -v me="$port" '
      {
        n = split($3, flags, ","); role = ""; bad = ""
        for (i = 1; i <= n; i++) {
          if (flags[i] == "master" || flags[i] == "slave") role = flags[i]
          if (flags[i] == "fail" || flags[i] == "fail?" || flags[i] == "handshake" || flags[i] == "noaddr") bad = bad (bad == "" ? "" : ",") flags[i]
        }
        split($2, address, "@"); addr[$1] = address[1]
        if (bad != "") printf "PROBLEM node %s: sees %s as %s\n", me, address[1], bad
        if (role == "master") {
          slots = ""
          for (i = 9; i <= NF; i++) if ($i !~ /^\[/) slots = slots " " $i
          if (slots != "") { served[$1] = slots; count++ }
        } else if (role == "slave") replicaOf[$1] = $4
      }
      END {
        if (count != masters) printf "PROBLEM node %s: sees %d masters serving slots, not %d\n", me, count, masters
        for (id in served) printf "VIEW master %s:%s\n", addr[id], served[id]
        for (id in replicaOf) {
          if (!(replicaOf[id] in served)) printf "PROBLEM node %s: replica %s follows %s, not a master serving slots\n", me, addr[id], replicaOf[id]
          else { printf "VIEW replica %s of %s\n", addr[id], addr[replicaOf[id]]; followers[replicaOf[id]]++ }
        }
        for (id in served) if (followers[id] != 1) printf "PROBLEM node %s: master %s has %d replicas, not 1\n", me, addr[id], followers[id]
      }' <<<"$nodes")
    grep '^PROBLEM ' <<<"$view" | sed 's/^PROBLEM //' || true
    view=$(grep '^VIEW ' <<<"$view" | sort || true)
    if [ -z "$first_port" ]; then
      first_view=$view
      first_port=$port
    elif [ "$view" != "$first_view" ]; then
      echo "node $port and node $first_port disagree on the masters' slots or the replicas"
    fi
    info=$(cli "$port" info replication)
    role=$(field role <<<"$info")
    if [ "$role" = slave ]; then
      link=$(field master_link_status <<<"$info")
      [ "$link" = up ] || echo "node $port: replica of $(field master_port <<<"$info") with master_link_status:$link"
    fi
  done
}

# Waits until health_problems prints nothing; 1 (with the last problems on stdout) after HEALTH_TIMEOUT.
wait_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) problems
  while :; do
    problems=$(health_problems)
    [ -z "$problems" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '%s\n' "$problems"
      return 1
    fi
    sleep 0.5
  done
}

# A node that has never joined a cluster: it knows only itself and serves no slot.
is_fresh() {
  local info
  info=$(cli "$1" cluster info)
  [ "$(field cluster_known_nodes <<<"$info")" = 1 ] && [ "$(field cluster_slots_assigned <<<"$info")" = 0 ]
}

create_cluster() {
  local seeds=() port
  for port in "${PORTS[@]}"; do seeds+=("$HOST:$port"); done
  log "creating the cluster: ${seeds[*]} (--cluster-replicas 1)"
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1 ||
    die "redis-cli --cluster create failed:
$(tail -n 20 "$CLUSTER_DIR/create.log")"
}

wipe_and_create() {
  log "$1: wiping the nodes' dirs and creating the cluster afresh"
  kill_nodes
  remove_node_dirs
  start_missing_nodes
  create_cluster
}

# Holds an exclusive lock on $CLUSTER_DIR/.lock on fd 9 until the script exits. `stop` removes the
# lock file while holding it, so a caller that was waiting on the old file locks the new one instead.
take_lock() {
  local deadline=$((SECONDS + LOCK_TIMEOUT))
  while :; do
    mkdir -p "$CLUSTER_DIR"
    exec 9>>"$CLUSTER_DIR/.lock"
    flock -w "$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))" 9 ||
      die "another redis-cluster.sh held $CLUSTER_DIR/.lock for more than $LOCK_TIMEOUT s"
    [ "$(stat -c %d:%i "$CLUSTER_DIR/.lock" 2>/dev/null)" = "$(stat -L -c %d:%i /dev/fd/9)" ] && return 0
    exec 9>&-
  done
}

cmd_start() {
  take_lock
  start_missing_nodes
  local port fresh=0 problems
  for port in "${PORTS[@]}"; do is_fresh "$port" && fresh=$((fresh + 1)); done
  if [ "$fresh" -eq "$NODES" ]; then
    create_cluster
  elif [ "$fresh" -gt 0 ]; then
    wipe_and_create "$fresh of $NODES nodes have no cluster (lost nodes.conf) while the others do"
  fi
  if ! problems=$(wait_healthy); then
    [ "$fresh" -eq "$NODES" ] &&
      die "the new cluster is not healthy after ${HEALTH_TIMEOUT} s:
$problems
$(log_tails)"
    wipe_and_create "not healthy after ${HEALTH_TIMEOUT} s ($(head -n 3 <<<"$problems" | paste -sd ';' - | sed 's/;/; /g'))"
    problems=$(wait_healthy) || die "the cluster created afresh is not healthy after ${HEALTH_TIMEOUT} s:
$problems
$(log_tails)"
  fi
  log "healthy: $MASTERS masters with a replica each on ports ${PORTS[*]}"
}

cmd_stop() {
  if [ ! -d "$CLUSTER_DIR" ]; then
    log "nothing to stop ($CLUSTER_DIR does not exist)"
    return 0
  fi
  take_lock
  kill_nodes
  remove_node_dirs
  rm -f "$CLUSTER_DIR/.lock"
  rmdir "$CLUSTER_DIR" 2>/dev/null || log "left $CLUSTER_DIR in place: it holds files that are not the cluster's"
  log "stopped the nodes on ports ${PORTS[*]}"
}

cmd_status() {
  local port pid status table='' problems
  for port in "${PORTS[@]}"; do
    status=0
    pid=$(node_pid "$port") || status=$?
    case $status in
      0) log "node $port: running (pid $pid)" ;;
      1) log "node $port: not running" ;;
      *) log "node $port: port taken by another Redis (dir '$pid')" ;;
    esac
    [ "$status" -eq 0 ] && [ -z "$table" ] && table=$(cli "$port" cluster nodes | sort -k2)
  done
  if [ -n "$table" ]; then
    printf '%s\n' "$table"
  else
    log 'no node answers CLUSTER NODES'
  fi
  problems=$(health_problems)
  if [ -z "$problems" ]; then
    log 'healthy'
  else
    log 'not healthy:'
    printf '%s\n' "$problems" | sed 's/^/  /'
    return 1
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
