#!/usr/bin/env bash
# services.sh — install (when missing), start, stop and check the services
# Flywheel's tests and demo need: ClickHouse (Debian's clickhouse-server) and
# Apache Kafka (KRaft, one node, from its Maven Central jars).
#
#   scripts/services.sh up      install what is missing, start both, wait until ready
#   scripts/services.sh down    stop both (data kept)
#   scripts/services.sh status  say what is running
#   scripts/services.sh reset   stop both and delete their data
#   FLYWHEEL_KAFKA_PORT=9192 scripts/services.sh kafka-up|kafka-down
#                               another broker, for the tests that stop Kafka
#   FLYWHEEL_CLICKHOUSE_PORT=9100 scripts/services.sh clickhouse-up|clickhouse-down
#                               another server, for the tests that stop ClickHouse
#   scripts/services.sh clickhouse-secure-up|clickhouse-secure-down
#                               a ClickHouse whose users need a password, with a TLS native
#                               port (9440; plain native 9110, HTTP 9111), its certificates
#                               made by openssl: the CA, user and password file are in
#                               $FLYWHEEL_SERVICES_DIR/clickhouse-secure/secrets; for the TLS tests
#   scripts/services.sh cluster-up|cluster-down|cluster-status
#                               ZooKeeper (Debian's zookeeper package, installed if missing)
#                               and a ClickHouse cluster "flywheel" of 2 shards x 2 replicas
#                               on loopback: nodes on native ports 9301-9304 (HTTP 9311-9314,
#                               interserver 9321-9324), ZooKeeper on 9309; for the cluster tests
#   FLYWHEEL_CLUSTER_NODE=3 scripts/services.sh cluster-node-down|cluster-node-kill|cluster-node-up
#                               stop, kill (SIGKILL) or start one node of the cluster (node 3:
#                               shard 2, replica 1)
#   scripts/services.sh kafka-cluster-up|kafka-cluster-down
#                               a Kafka cluster of 3 KRaft nodes (brokers 9391-9393, controllers
#                               9491-9493; 3 replicas, 2 in sync), for the tests that kill a broker
#   FLYWHEEL_KAFKA_CLUSTER_NODE=2 scripts/services.sh kafka-cluster-node-down|-kill|-up
#                               stop, kill (SIGKILL) or start one broker of it
#   scripts/services.sh browser install Debian's chromium if missing (the dashboard's browser test)
#   scripts/services.sh chdb    install chDB (PyPI chdb-core, ClickHouse 26.x in process) into a
#                               virtualenv under $FLYWHEEL_CACHE if missing; prints its python
#
# FLYWHEEL_CLICKHOUSE_LOG_LEVEL (default warning; information shows, say, the
# inserts a replicated table deduplicated) is the level of every ClickHouse
# server's log, set when the server is started.
#
# Data and logs live in $FLYWHEEL_SERVICES_DIR (default: .services/ in the repo,
# ignored by git). Kafka's jars are cached in $FLYWHEEL_CACHE (default
# ~/.cache/flywheel), never in the repository. Running `up` twice is harmless.
# The single servers use one already listening on their port; a cluster node
# (ZooKeeper, the ClickHouse cluster's, the Kafka cluster's) refuses, naming
# the port and the pid, any process on its ports but the one its pid file
# records, running in its data dir. FLYWHEEL_CLUSTER_PORT_BASE (9300),
# FLYWHEEL_ZOOKEEPER_PORT and FLYWHEEL_KAFKA_CLUSTER_PORT_BASE (9390) move
# the clusters' ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${FLYWHEEL_SERVICES_DIR:-$ROOT/.services}"
CACHE="${FLYWHEEL_CACHE:-$HOME/.cache/flywheel}"
KAFKA_VERSION="${FLYWHEEL_KAFKA_VERSION:-4.1.1}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_PORT="${FLYWHEEL_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${FLYWHEEL_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
# The default broker lives in $DIR/kafka; another one (the fault-injection
# broker that tests stop and start, say) in $DIR/kafka-PORT.
if [[ "$KAFKA_PORT" == 9092 ]]; then KDIR="$DIR/kafka"; else KDIR="$DIR/kafka-$KAFKA_PORT"; fi
CH_PORT="${FLYWHEEL_CLICKHOUSE_PORT:-9000}"
CH_HTTP_PORT="${FLYWHEEL_CLICKHOUSE_HTTP_PORT:-$((CH_PORT == 9000 ? 8123 : CH_PORT + 1))}"
# The default server lives in $DIR/clickhouse; another one (for the tests that
# stop ClickHouse) in $DIR/clickhouse-PORT.
if [[ "$CH_PORT" == 9000 ]]; then CHDIR="$DIR/clickhouse"; else CHDIR="$DIR/clickhouse-$CH_PORT"; fi
WAIT_SECONDS="${FLYWHEEL_SERVICES_TIMEOUT:-120}"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# port_pid PORT prints the pid of the process listening on TCP port PORT,
# from ss, else from /proc (the socket's inode among every process's fds);
# nothing when neither shows one.
port_pid() {
  local pid inode fd
  pid="$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)"
  if [[ -z "$pid" ]]; then
    inode="$(awk -v port="$(printf '%04X' "$1")" \
      '$4 == "0A" { split($2, a, ":"); if (a[2] == port) { print $10; exit } }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)"
    if [[ -n "$inode" ]]; then
      for fd in /proc/[0-9]*/fd/*; do
        if [[ "$(readlink "$fd" 2>/dev/null)" == "socket:[$inode]" ]]; then
          pid="${fd#/proc/}" pid="${pid%%/*}"
          break
        fi
      done
    fi
  fi
  [[ -z "$pid" ]] || echo "$pid"
}

# pid_started_by PID PIDFILE: PID is the process PIDFILE records, or a
# descendant of it (a pid file of a shell above the server).
pid_started_by() {
  local pid="$1" want
  [[ -f "$2" ]] || return 1
  want="$(cat "$2")"
  while [[ -n "$pid" && "$pid" != 0 && "$pid" != 1 ]]; do
    [[ "$pid" == "$want" ]] && return 0
    pid="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f2 || true)" # the ppid, after "(comm) state"
  done
  return 1
}

# refuse_foreign NAME PIDFILE DIR PORT... dies, naming the port and the pid
# holding it, when any PORT listens but not by the process PIDFILE records
# (or a child of it) running in DIR: a cluster node must not join whatever
# holds its port (a leftover broker of another clone, with another cluster
# id, made the cluster tests hang). Ports nobody listens on pass.
refuse_foreign() {
  local name="$1" pidf="$2" dir="$3" port pid cwd want
  shift 3
  want="$(cd "$dir" 2>/dev/null && pwd -P || echo "$dir")"
  for port in "$@"; do
    port_open "$port" || continue
    pid="$(port_pid "$port")"
    [[ -n "$pid" ]] || die "$name: 127.0.0.1:$port is already taken by a process whose pid ss and /proc do not show; refusing to use it"
    if ! pid_started_by "$pid" "$pidf"; then
      die "$name: 127.0.0.1:$port is held by pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160 | sed 's/ *$//')), not by the one this script started (pid file $pidf: $(cat "$pidf" 2>/dev/null || echo none)); stop it or free the port"
    fi
    cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
    if [[ "$cwd" != "$want" ]]; then
      die "$name: 127.0.0.1:$port is held by pid $pid, which runs in ${cwd:-an unknown directory}, not in this node's data dir $want; stop it or free the port"
    fi
  done
}

# ---------------------------------------------------------------- install

install_clickhouse() {
  if command -v clickhouse-server >/dev/null && command -v clickhouse-client >/dev/null; then
    return
  fi
  log "installing clickhouse-server and clickhouse-client from Debian's packages"
  command -v apt-get >/dev/null || die "clickhouse-server is missing and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null ||
    die "apt-get install clickhouse-server clickhouse-client failed"
}

install_browser() {
  if [[ -x "${FLYWHEEL_TEST_CHROMIUM:-/usr/bin/chromium}" ]]; then
    return
  fi
  log "installing chromium from Debian's packages (headless, for the dashboard's browser test)"
  command -v apt-get >/dev/null || die "chromium is missing and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ||
    die "apt-get install chromium failed"
}

# chDB: a current ClickHouse engine in process, for the compatibility test
# (no current ClickHouse server can be installed on these machines).
CHDB_VERSION="${FLYWHEEL_CHDB_VERSION:-26.9.0}"
CHDB_VENV="$CACHE/chdb-$CHDB_VERSION"

install_chdb() {
  if [[ -f "$CHDB_VENV/.complete" ]]; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is needed for chDB"
  log "installing chdb-core $CHDB_VERSION from PyPI into $CHDB_VENV"
  rm -rf "$CHDB_VENV"
  python3 -m venv "$CHDB_VENV" || die "python3 -m venv $CHDB_VENV failed"
  "$CHDB_VENV/bin/pip" install -q --disable-pip-version-check "chdb-core==$CHDB_VERSION" ||
    die "pip could not install chdb-core==$CHDB_VERSION"
  "$CHDB_VENV/bin/python" -c 'from chdb import session' || die "chdb-core $CHDB_VERSION does not import"
  touch "$CHDB_VENV/.complete"
}

install_kafka() {
  if [[ -f "$KAFKA_HOME/.complete" ]]; then
    return
  fi
  command -v java >/dev/null || die "java (17 or newer) is needed to run Kafka"
  command -v mvn >/dev/null || die "mvn is needed to fetch Kafka's jars from Maven Central"
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME"
  mkdir -p "$KAFKA_HOME"
  cat >"$KAFKA_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.flywheel</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.16</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$KAFKA_HOME/libs"
  (cd "$KAFKA_HOME" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=libs) ||
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies"
  touch "$KAFKA_HOME/.complete"
}

# ---------------------------------------------------------------- clickhouse

clickhouse_config() {
  local d="$CHDIR"
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
  cat >"$d/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>${FLYWHEEL_CLICKHOUSE_LOG_LEVEL:-warning}</level>
    <log>$d/log/clickhouse-server.log</log>
    <errorlog>$d/log/clickhouse-server.err.log</errorlog>
    <size>100M</size>
    <count>3</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$CH_PORT</tcp_port>
  <http_port>$CH_HTTP_PORT</http_port>
  <max_connections>512</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <uncompressed_cache_size>1073741824</uncompressed_cache_size>
  <mark_cache_size>536870912</mark_cache_size>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
  <max_session_timeout>3600</max_session_timeout>
  <default_session_timeout>60</default_session_timeout>
</yandex>
XML
  cat >"$d/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>8000000000</max_memory_usage>
      <load_balancing>random</load_balancing>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval>
    </default>
  </quotas>
</yandex>
XML
}

# OWN_PORTS are the ports the node that clickhouse_up or kafka_start is
# about to run must hold itself (cluster_node and kafka_cluster_node set
# them); empty for the single servers, which use a server already there.
OWN_PORTS=()

clickhouse_up() {
  local d="$CHDIR" pidf="$CHDIR/clickhouse.pid"
  if ((${#OWN_PORTS[@]})); then refuse_foreign "clickhouse (cluster node $CLUSTER_NODE)" "$pidf" "$d" "${OWN_PORTS[@]}"; fi
  if pid_alive "$pidf" && clickhouse_ready; then
    log "clickhouse already running (pid $(cat "$pidf")) on 127.0.0.1:$CH_PORT"
    return
  fi
  if port_open "$CH_PORT"; then
    if clickhouse_ready; then
      log "a ClickHouse server not started by this script already answers on 127.0.0.1:$CH_PORT; using it"
      return
    fi
    die "port 127.0.0.1:$CH_PORT is taken by something that is not ClickHouse"
  fi
  clickhouse_config
  log "starting clickhouse-server on 127.0.0.1:$CH_PORT (data in $d)"
  local bin
  bin="$(command -v clickhouse-server)"
  (cd "$d" || exit 1; nohup "$bin" --config-file="$d/config.xml" >"$d/log/stdout.log" 2>&1 </dev/null & echo $! >"$pidf")
  local deadline=$((SECONDS + WAIT_SECONDS))
  until clickhouse_ready; do
    if ! pid_alive "$pidf"; then
      tail -n 20 "$d/log/stdout.log" "$d/log/clickhouse-server.err.log" 2>/dev/null >&2 || true
      die "clickhouse-server exited during start-up; logs in $d/log"
    fi
    ((SECONDS < deadline)) || die "clickhouse-server did not accept connections on 127.0.0.1:$CH_PORT within ${WAIT_SECONDS}s; logs in $d/log"
    sleep 0.5
  done
  log "clickhouse ready: $(clickhouse-client --port "$CH_PORT" "${CH_CLIENT_ARGS[@]}" --query 'SELECT version()')"
}

# CH_CLIENT_ARGS are clickhouse-client's extra arguments (a user and password).
CH_CLIENT_ARGS=()

clickhouse_ready() {
  clickhouse-client --host 127.0.0.1 --port "$CH_PORT" "${CH_CLIENT_ARGS[@]}" --query 'SELECT 1' >/dev/null 2>&1
}

clickhouse_down() {
  local pidf="$CHDIR/clickhouse.pid"
  stop_pid "$pidf" clickhouse-server
}

# ---------------------------------------------------------------- secure clickhouse
#
# A server like the single ones above whose native port 9440 speaks TLS
# (a certificate for 127.0.0.1 and localhost, signed by a CA made here with
# openssl) and whose users, default and flywheel, need a password (random,
# made once, kept in secrets/password; users.xml holds its SHA-256). Its
# plain native port (9110) and HTTP port (9111) need the password too.
# secrets/ holds ca.pem (what clients trust), user and password, and a
# client certificate (client.pem, client.key): the server takes clients
# without one, and refuses one that its CA did not sign.

SECURE_PORT="${FLYWHEEL_CLICKHOUSE_SECURE_PORT:-9440}"
SECURE_DIR="$DIR/clickhouse-secure"
SECRETS="$SECURE_DIR/secrets"
SECURE_USER=flywheel

secure_node() {
  CHDIR="$SECURE_DIR"
  CH_PORT="${FLYWHEEL_CLICKHOUSE_SECURE_PLAIN_PORT:-9110}"
  CH_HTTP_PORT=$((CH_PORT + 1))
}

# secure_sign NAME CN EXT makes NAME.key and NAME.pem, a certificate for CN
# with the extensions EXT, signed by the CA.
secure_sign() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null &&
    printf '%b' "$3" >"$1.ext" &&
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile "$1.ext" \
      -out "$1.pem" 2>/dev/null &&
    chmod 600 "$1.key" && rm -f "$1.csr" "$1.ext"
}

# secure_certificates makes, once, what is missing of the CA, the server's
# certificate, a client certificate (for the tests of clickhouse.tls.cert_file)
# and the password.
secure_certificates() {
  mkdir -p "$SECRETS"
  chmod 700 "$SECRETS"
  [[ -f "$SECRETS/ca.pem" && -f "$SECRETS/server.pem" && -f "$SECRETS/client.pem" && -f "$SECRETS/password" ]] && return
  if ! command -v openssl >/dev/null; then
    log "installing openssl from Debian's packages (the secure clickhouse's certificates)"
    command -v apt-get >/dev/null || die "openssl is missing and apt-get is not available"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; } ||
      die "apt-get install openssl failed"
  fi
  log "making a CA, certificates and a password for the secure clickhouse in $SECRETS"
  (
    cd "$SECRETS" || exit 1
    if [[ ! -f ca.pem ]]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=flywheel test clickhouse ca" \
        -keyout ca.key -out ca.pem 2>/dev/null && chmod 600 ca.key || exit 1
      rm -f server.pem client.pem
    fi
    [[ -f server.pem ]] || secure_sign server 127.0.0.1 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' || exit 1
    [[ -f client.pem ]] || secure_sign client "$SECURE_USER" 'extendedKeyUsage=clientAuth\n' || exit 1
    if [[ ! -f password ]]; then
      openssl rand -hex 16 >password && chmod 600 password || exit 1
    fi
    printf '%s\n' "$SECURE_USER" >user
  ) || die "openssl could not make the secure clickhouse's certificates"
}

secure_config() {
  secure_certificates
  mkdir -p "$CHDIR/config.d" "$CHDIR/users.d"
  cat >"$CHDIR/config.d/tls.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <tcp_port_secure>$SECURE_PORT</tcp_port_secure>
  <openSSL>
    <server>
      <certificateFile>$SECRETS/server.pem</certificateFile>
      <privateKeyFile>$SECRETS/server.key</privateKeyFile>
      <!-- a client certificate is not required; one that is shown must be signed by the CA -->
      <verificationMode>relaxed</verificationMode>
      <caConfig>$SECRETS/ca.pem</caConfig>
      <loadDefaultCAFile>false</loadDefaultCAFile>
      <cacheSessions>true</cacheSessions>
      <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
      <preferServerCiphers>true</preferServerCiphers>
    </server>
  </openSSL>
</yandex>
XML
  local hash user
  hash="$(tr -d '\n' <"$SECRETS/password" | sha256sum | cut -d' ' -f1)"
  {
    printf '<?xml version="1.0"?>\n<yandex>\n  <users>\n'
    for user in default "$SECURE_USER"; do
      printf '    <%s replace="replace"><password_sha256_hex>%s</password_sha256_hex><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></%s>\n' \
        "$user" "$hash" "$user"
    done
    printf '  </users>\n</yandex>\n'
  } >"$CHDIR/users.d/passwords.xml"
  CH_CLIENT_ARGS=(--user "$SECURE_USER" --password "$(cat "$SECRETS/password")")
}

secure_up() {
  secure_node
  secure_config
  clickhouse_up
  local deadline=$((SECONDS + WAIT_SECONDS))
  until port_open "$SECURE_PORT"; do
    ((SECONDS < deadline)) || die "the secure clickhouse does not listen on 127.0.0.1:$SECURE_PORT within ${WAIT_SECONDS}s; logs in $CHDIR/log"
    sleep 0.5
  done
  log "secure clickhouse ready: TLS on 127.0.0.1:$SECURE_PORT, user $SECURE_USER, CA and password in $SECRETS"
}

# ---------------------------------------------------------------- kafka

kafka_jvm_args() {
  KAFKA_JVM=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$KDIR/log4j2.properties"
    -Dkafka.logs.dir="$KDIR/log"
    -cp "$KAFKA_HOME/libs/*")
}

kafka_java() {
  kafka_jvm_args
  java "${KAFKA_JVM[@]}" "$@"
}

kafka_config() {
  local d="$KDIR"
  mkdir -p "$d/data" "$d/log"
  cat >"$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=${KAFKA_NODE_ID:-1}
controller.quorum.voters=${KAFKA_VOTERS:-1@127.0.0.1:$KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
num.partitions=4
default.replication.factor=${KAFKA_RF:-1}
min.insync.replicas=${KAFKA_MIN_ISR:-1}
offsets.topic.replication.factor=${KAFKA_RF:-1}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=${KAFKA_RF:-1}
transaction.state.log.min.isr=${KAFKA_MIN_ISR:-1}
share.coordinator.state.topic.replication.factor=${KAFKA_RF:-1}
share.coordinator.state.topic.min.isr=${KAFKA_MIN_ISR:-1}
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=268435456
PROPS
  cat >"$d/log4j2.properties" <<PROPS
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $d/log/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
PROPS
}

kafka_up() {
  if kafka_start; then kafka_wait; fi
}

# kafka_start formats (once) and launches the broker of $KDIR on $KAFKA_PORT;
# it returns 1 when it is already running (nothing to wait for).
kafka_start() {
  local d="$KDIR" pidf="$KDIR/kafka.pid"
  if ((${#OWN_PORTS[@]})); then refuse_foreign "kafka (cluster node $KAFKA_NODE_ID)" "$pidf" "$d" "${OWN_PORTS[@]}"; fi
  if pid_alive "$pidf" && port_open "$KAFKA_PORT"; then
    log "kafka already running (pid $(cat "$pidf")) on 127.0.0.1:$KAFKA_PORT"
    return 1
  fi
  if port_open "$KAFKA_PORT"; then
    log "something not started by this script already listens on 127.0.0.1:$KAFKA_PORT; using it as Kafka"
    return 1
  fi
  kafka_config
  if [[ ! -f "$d/data/meta.properties" ]]; then
    local id="${KAFKA_CLUSTER_ID:-}"
    [[ -n "$id" ]] || id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    [[ -n "$id" ]] || die "kafka-storage random-uuid printed nothing; is $KAFKA_HOME complete?"
    kafka_java kafka.tools.StorageTool format -t "$id" -c "$d/server.properties" >"$d/log/format.log" 2>&1 ||
      { cat "$d/log/format.log" >&2; die "formatting Kafka's KRaft storage failed"; }
  fi
  : >"$d/log/server.log" # readiness is read from this log: start it afresh
  log "starting kafka $KAFKA_VERSION (KRaft, node ${KAFKA_NODE_ID:-1}) on 127.0.0.1:$KAFKA_PORT (data in $d)"
  # exec: the pid recorded is the broker's own, so that a kill (SIGKILL, no
  # handler to pass it on) reaches the broker and not only a shell above it.
  (cd "$d" || exit 1; kafka_jvm_args; exec java "${KAFKA_JVM[@]}" kafka.Kafka "$d/server.properties" >"$d/log/stdout.log" 2>&1 </dev/null) &
  echo $! >"$pidf"
}

kafka_wait() {
  local d="$KDIR" pidf="$KDIR/kafka.pid"
  local deadline=$((SECONDS + WAIT_SECONDS))
  until kafka_ready; do
    if ! pid_alive "$pidf"; then
      tail -n 30 "$d/log/stdout.log" "$d/log/server.log" 2>/dev/null >&2 || true
      die "kafka exited during start-up; logs in $d/log"
    fi
    ((SECONDS < deadline)) || die "kafka did not accept connections on 127.0.0.1:$KAFKA_PORT within ${WAIT_SECONDS}s; logs in $d/log"
    sleep 0.5
  done
  log "kafka ready on 127.0.0.1:$KAFKA_PORT"
}

kafka_ready() {
  port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KDIR/log/server.log" 2>/dev/null
}

kafka_down() {
  stop_pid "$KDIR/kafka.pid" kafka
}

# ---------------------------------------------------------------- kafka cluster
#
# Three KRaft nodes, each broker and controller, on loopback: node N (1-3)
# listens on KCLUSTER_BASE+N (9391-9393) and its controller on
# KCLUSTER_BASE+100+N (9491-9493); topics get 3 replicas and need 2 in sync,
# for the tests that kill a broker of a cluster.

KCLUSTER_BASE="${FLYWHEEL_KAFKA_CLUSTER_PORT_BASE:-9390}"
KCLUSTER_DIR="$DIR/kafka-cluster"

# kafka_cluster_node sets the globals kafka_config, kafka_start and
# kafka_wait read to node $1's.
kafka_cluster_node() {
  local n="$1" i voters=""
  for i in 1 2 3; do voters="$voters${voters:+,}$i@127.0.0.1:$((KCLUSTER_BASE + 100 + i))"; done
  KDIR="$KCLUSTER_DIR/node$n"
  KAFKA_PORT=$((KCLUSTER_BASE + n))
  KAFKA_CONTROLLER_PORT=$((KCLUSTER_BASE + 100 + n))
  KAFKA_NODE_ID="$n" KAFKA_VOTERS="$voters" KAFKA_RF=3 KAFKA_MIN_ISR=2
  OWN_PORTS=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
}

kafka_cluster_id() {
  mkdir -p "$KCLUSTER_DIR"
  if [[ ! -s "$KCLUSTER_DIR/cluster.id" ]]; then
    kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$KCLUSTER_DIR/cluster.id"
  fi
  KAFKA_CLUSTER_ID="$(cat "$KCLUSTER_DIR/cluster.id")"
  [[ -n "$KAFKA_CLUSTER_ID" ]] || die "kafka-storage random-uuid printed nothing; is $KAFKA_HOME complete?"
}

# kafka_cluster_up starts the nodes given (default all three) and waits for
# them: a controller quorum needs two, so they start together.
kafka_cluster_up() {
  kafka_cluster_id
  local n started=()
  for n in "${@:-1 2 3}"; do
    for n in $n; do
      kafka_cluster_node "$n"
      if kafka_start; then started+=("$n"); fi
    done
  done
  for n in "${started[@]}"; do
    kafka_cluster_node "$n"
    kafka_wait
  done
  log "kafka cluster ready: brokers on 127.0.0.1:$((KCLUSTER_BASE + 1))-$((KCLUSTER_BASE + 3))"
}

kafka_cluster_kill() {
  kafka_cluster_node "$1"
  if pid_alive "$KDIR/kafka.pid"; then
    log "killing kafka (cluster node $1, pid $(cat "$KDIR/kafka.pid"))"
    pkill -KILL -P "$(cat "$KDIR/kafka.pid")" 2>/dev/null || true # a pid file of a shell above the broker
    kill -KILL "$(cat "$KDIR/kafka.pid")" 2>/dev/null || true
    rm -f "$KDIR/kafka.pid"
  fi
  local deadline=$((SECONDS + 10))
  while port_open "$KAFKA_PORT"; do
    ((SECONDS < deadline)) || die "kafka cluster node $1: 127.0.0.1:$KAFKA_PORT is still held, by pid $(port_pid "$KAFKA_PORT" || true), after SIGKILL (not started by this script?)"
    sleep 0.2
  done
}

kafka_cluster_down() {
  local n
  for n in "${@:-1 2 3}"; do
    for n in $n; do
      kafka_cluster_node "$n"
      stop_pid "$KDIR/kafka.pid" "kafka (cluster node $n)"
    done
  done
}

# ---------------------------------------------------------------- cluster
#
# ZooKeeper (standalone, from Debian's zookeeper package) and a ClickHouse
# cluster of 2 shards x 2 replicas: node N (1-4) is shard (N+1)/2, replica
# sN rR, on native port BASE+N, HTTP BASE+10+N and interserver HTTP
# BASE+20+N; ZooKeeper on BASE+9. Each node is a server like the single ones
# above (clickhouse_config, clickhouse_up) plus config.d/cluster.xml. The
# {replica} macro is unique across the cluster (s1r1, s1r2, s2r1, s2r2), so
# that tables replicated on every node (one ZooKeeper path for all shards)
# can use it too.

CLUSTER_BASE="${FLYWHEEL_CLUSTER_PORT_BASE:-9300}"
CLUSTER_NAME="${FLYWHEEL_CLUSTER_NAME:-flywheel}"
ZK_PORT="${FLYWHEEL_ZOOKEEPER_PORT:-$((CLUSTER_BASE + 9))}"
ZKDIR="$DIR/zookeeper"
CLUSTER_DIR="$DIR/clickhouse-cluster"
ZK_CLASSPATH="/usr/share/java/zookeeper.jar"

install_zookeeper() {
  if [[ -f "$ZK_CLASSPATH" ]]; then
    return
  fi
  log "installing zookeeper from Debian's packages"
  command -v apt-get >/dev/null || die "zookeeper is missing and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq zookeeper >/dev/null || { apt-get update -qq && apt-get install -y -qq zookeeper >/dev/null; } ||
    die "apt-get install zookeeper failed"
  [[ -f "$ZK_CLASSPATH" ]] || die "the zookeeper package has no $ZK_CLASSPATH"
}

# Ready once it serves requests (ruok answers imok before that).
zookeeper_ready() {
  local reply
  reply="$( (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null || true)"
  [[ "$reply" == *"Mode: "* ]]
}

zookeeper_up() {
  local d="$ZKDIR" pidf="$ZKDIR/zookeeper.pid"
  refuse_foreign zookeeper "$pidf" "$d" "$ZK_PORT"
  if pid_alive "$pidf" && zookeeper_ready; then
    log "zookeeper already running (pid $(cat "$pidf")) on 127.0.0.1:$ZK_PORT"
    return
  fi
  if port_open "$ZK_PORT"; then
    zookeeper_ready || die "port 127.0.0.1:$ZK_PORT is taken by something that is not ZooKeeper"
    log "zookeeper already running (pid $(cat "$pidf")) on 127.0.0.1:$ZK_PORT" # refuse_foreign: it is ours
    return
  fi
  mkdir -p "$d/data" "$d/log"
  cat >"$d/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG
  log "starting zookeeper on 127.0.0.1:$ZK_PORT (data in $d)"
  (cd "$d" || exit 1; nohup java -Xms64m -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dzookeeper.log.dir="$d/log" -cp "$ZK_CLASSPATH" org.apache.zookeeper.server.ZooKeeperServerMain "$d/zoo.cfg" \
    >"$d/log/stdout.log" 2>&1 </dev/null & echo $! >"$pidf")
  local deadline=$((SECONDS + WAIT_SECONDS))
  until zookeeper_ready; do
    if ! pid_alive "$pidf"; then
      tail -n 30 "$d/log/stdout.log" >&2 || true
      die "zookeeper exited during start-up; logs in $d/log"
    fi
    ((SECONDS < deadline)) || die "zookeeper did not answer on 127.0.0.1:$ZK_PORT within ${WAIT_SECONDS}s; logs in $d/log"
    sleep 0.5
  done
  log "zookeeper ready on 127.0.0.1:$ZK_PORT"
}

zookeeper_down() {
  stop_pid "$ZKDIR/zookeeper.pid" zookeeper
}

# cluster_node N sets CHDIR, CH_PORT and CH_HTTP_PORT to node N's, as the
# single-server functions use them, and OWN_PORTS to its three ports.
cluster_node() {
  CLUSTER_NODE="$1"
  CHDIR="$CLUSTER_DIR/node$1"
  CH_PORT=$((CLUSTER_BASE + $1))
  CH_HTTP_PORT=$((CLUSTER_BASE + 10 + $1))
  OWN_PORTS=("$CH_PORT" "$CH_HTTP_PORT" "$((CLUSTER_BASE + 20 + $1))")
}

cluster_node_config() {
  local n="$1" shard=$((($1 + 1) / 2)) replica=$((($1 + 1) % 2 + 1))
  mkdir -p "$CHDIR/config.d" "$CHDIR/users.d"
  local servers="" s r
  for s in 1 2; do
    servers+="      <shard><internal_replication>true</internal_replication>"
    for r in 1 2; do
      servers+="<replica><host>127.0.0.1</host><port>$((CLUSTER_BASE + (s - 1) * 2 + r))</port></replica>"
    done
    servers+="</shard>"$'\n'
  done
  cat >"$CHDIR/config.d/cluster.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>$((CLUSTER_BASE + 20 + n))</interserver_http_port>
  <zookeeper>
    <node><host>127.0.0.1</host><port>$ZK_PORT</port></node>
    <session_timeout_ms>30000</session_timeout_ms>
  </zookeeper>
  <macros>
    <cluster>$CLUSTER_NAME</cluster>
    <shard>$shard</shard>
    <replica>s${shard}r${replica}</replica>
  </macros>
  <remote_servers>
    <$CLUSTER_NAME>
$servers    </$CLUSTER_NAME>
  </remote_servers>
  <!-- a short queue: each node's DDL worker scans all of it, in ZooKeeper, every minute -->
  <distributed_ddl>
    <path>/clickhouse/task_queue/ddl</path>
    <task_max_lifetime>3600</task_max_lifetime>
    <max_tasks_in_queue>200</max_tasks_in_queue>
  </distributed_ddl>
  <!-- lean: four servers share two cores with everything else -->
  <max_connections>256</max_connections>
  <max_concurrent_queries>50</max_concurrent_queries>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <mark_cache_size>134217728</mark_cache_size>
  <merge_tree>
    <max_suspicious_broken_parts>100</max_suspicious_broken_parts>
  </merge_tree>
</yandex>
XML
  cat >"$CHDIR/users.d/lean.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>2000000000</max_memory_usage>
      <max_threads>2</max_threads>
      <!-- each shard's first healthy replica: a process reads what it wrote -->
      <load_balancing>in_order</load_balancing>
      <!-- a subquery of a Distributed table inside a query of one runs once, on the initiator -->
      <distributed_product_mode>global</distributed_product_mode>
      <background_pool_size>4</background_pool_size>
      <background_schedule_pool_size>4</background_schedule_pool_size>
    </default>
  </profiles>
</yandex>
XML
}

cluster_up() {
  mkdir -p "$CLUSTER_DIR"
  zookeeper_up
  local n
  for n in 1 2 3 4; do
    cluster_node "$n"
    cluster_node_config "$n"
    clickhouse_up
  done
  # Every node sees ZooKeeper and the cluster's four nodes.
  local deadline=$((SECONDS + WAIT_SECONDS))
  until [[ "$(clickhouse-client --port "$((CLUSTER_BASE + 1))" --query \
      "SELECT count() FROM remote('127.0.0.1:$((CLUSTER_BASE + 1)),127.0.0.1:$((CLUSTER_BASE + 2)),127.0.0.1:$((CLUSTER_BASE + 3)),127.0.0.1:$((CLUSTER_BASE + 4))', system.zookeeper) WHERE path = '/'" 2>/dev/null)" -gt 0 ]] 2>/dev/null; do
    ((SECONDS < deadline)) || die "the cluster's nodes do not all reach ZooKeeper on 127.0.0.1:$ZK_PORT within ${WAIT_SECONDS}s"
    sleep 0.5
  done
  log "clickhouse cluster $CLUSTER_NAME ready: 2 shards x 2 replicas on 127.0.0.1:$((CLUSTER_BASE + 1))-$((CLUSTER_BASE + 4))"
}

cluster_down() {
  local n
  for n in 1 2 3 4; do
    cluster_node "$n"
    stop_pid "$CHDIR/clickhouse.pid" "clickhouse-server (cluster node $n)"
  done
  zookeeper_down
}

cluster_status() {
  local n
  for n in 1 2 3 4; do
    cluster_node "$n"
    pid_alive "$CHDIR/clickhouse.pid" && echo "cluster node $n (127.0.0.1:$CH_PORT): running (pid $(cat "$CHDIR/clickhouse.pid"))" ||
      echo "cluster node $n (127.0.0.1:$CH_PORT): stopped"
  done
  pid_alive "$ZKDIR/zookeeper.pid" && echo "zookeeper (127.0.0.1:$ZK_PORT): running (pid $(cat "$ZKDIR/zookeeper.pid"))" ||
    echo "zookeeper (127.0.0.1:$ZK_PORT): stopped"
}

# ---------------------------------------------------------------- common

stop_pid() {
  local pidf="$1" name="$2"
  if ! pid_alive "$pidf"; then
    rm -f "$pidf"
    log "$name not running"
    return
  fi
  local pid
  pid="$(cat "$pidf")"
  log "stopping $name (pid $pid)"
  pkill -TERM -P "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidf"; return; }
    sleep 0.5
  done
  log "$name did not stop in 30s; killing it"
  pkill -KILL -P "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidf"
}

case "${1:-}" in
  up)
    mkdir -p "$DIR"
    install_clickhouse
    install_kafka
    clickhouse_up
    kafka_up
    ;;
  down)
    for pidf in "$DIR"/kafka*/kafka.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "kafka ($(dirname "$pidf"))"
    done
    for pidf in "$DIR"/clickhouse*/clickhouse.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "clickhouse-server ($(dirname "$pidf"))"
    done
    for pidf in "$CLUSTER_DIR"/node*/clickhouse.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "clickhouse-server ($(dirname "$pidf"))"
    done
    for pidf in "$KCLUSTER_DIR"/node*/kafka.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "kafka ($(dirname "$pidf"))"
    done
    if [[ -f "$ZKDIR/zookeeper.pid" ]]; then zookeeper_down; fi
    ;;
  kafka-up)
    mkdir -p "$DIR"
    install_kafka
    kafka_up
    ;;
  kafka-down)
    kafka_down
    ;;
  kafka-cluster-up)
    mkdir -p "$DIR"
    install_kafka
    kafka_cluster_up
    ;;
  kafka-cluster-down)
    kafka_cluster_down
    ;;
  kafka-cluster-node-up|kafka-cluster-node-down|kafka-cluster-node-kill)
    # one broker of the Kafka cluster (FLYWHEEL_KAFKA_CLUSTER_NODE, 1-3), for
    # the tests that kill one
    n="${FLYWHEEL_KAFKA_CLUSTER_NODE:-}"
    [[ "$n" =~ ^[1-3]$ ]] || die "FLYWHEEL_KAFKA_CLUSTER_NODE must be 1, 2 or 3 (got '$n')"
    case "$1" in
      kafka-cluster-node-up) kafka_cluster_up "$n" ;;
      kafka-cluster-node-kill) kafka_cluster_kill "$n" ;;
      *) kafka_cluster_down "$n" ;;
    esac
    ;;
  browser)
    install_browser
    ;;
  chdb)
    install_chdb
    echo "$CHDB_VENV/bin/python"
    ;;
  clickhouse-up)
    mkdir -p "$DIR"
    install_clickhouse
    clickhouse_up
    ;;
  clickhouse-down)
    clickhouse_down
    ;;
  clickhouse-secure-up)
    mkdir -p "$DIR"
    install_clickhouse
    secure_up
    ;;
  clickhouse-secure-down)
    secure_node
    clickhouse_down
    ;;
  cluster-up)
    mkdir -p "$DIR"
    install_clickhouse
    install_zookeeper
    cluster_up
    ;;
  cluster-down)
    cluster_down
    ;;
  cluster-status)
    cluster_status
    ;;
  cluster-node-up|cluster-node-down|cluster-node-kill)
    # one node of the cluster (FLYWHEEL_CLUSTER_NODE, 1-4), for the tests
    # that stop (SIGTERM) or kill (SIGKILL) a replica
    n="${FLYWHEEL_CLUSTER_NODE:-}"
    [[ "$n" =~ ^[1-4]$ ]] || die "FLYWHEEL_CLUSTER_NODE must be 1, 2, 3 or 4 (got '$n')"
    cluster_node "$n"
    case "$1" in
      cluster-node-up)
        zookeeper_up
        cluster_node_config "$n"
        clickhouse_up
        ;;
      cluster-node-kill)
        if pid_alive "$CHDIR/clickhouse.pid"; then
          pid="$(cat "$CHDIR/clickhouse.pid")"
          log "killing clickhouse-server (cluster node $n) (pid $pid)"
          kill -KILL "$pid" 2>/dev/null || true
          for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
          done
        fi
        rm -f "$CHDIR/clickhouse.pid"
        # After a crash a replica's local parts may differ from ZooKeeper's
        # list (an insert written but not committed, a merge half done), and
        # 18.16 refuses to start such a table unless told to restore: the
        # flag makes it detach what ZooKeeper lacks and fetch what it lacks.
        mkdir -p "$CHDIR/data/flags"
        touch "$CHDIR/data/flags/force_restore_data"
        ;;
      *)
        stop_pid "$CHDIR/clickhouse.pid" "clickhouse-server (cluster node $n)"
        ;;
    esac
    ;;
  status)
    pid_alive "$DIR/clickhouse/clickhouse.pid" && echo "clickhouse: running (pid $(cat "$DIR/clickhouse/clickhouse.pid"))" || echo "clickhouse: stopped"
    pid_alive "$KDIR/kafka.pid" && echo "kafka: running (pid $(cat "$KDIR/kafka.pid"))" || echo "kafka: stopped"
    if [[ -d "$SECURE_DIR" ]]; then
      pid_alive "$SECURE_DIR/clickhouse.pid" && echo "secure clickhouse (TLS 127.0.0.1:$SECURE_PORT): running (pid $(cat "$SECURE_DIR/clickhouse.pid"))" ||
        echo "secure clickhouse (TLS 127.0.0.1:$SECURE_PORT): stopped"
    fi
    if [[ -d "$CLUSTER_DIR" ]]; then cluster_status; fi
    ;;
  reset)
    for pidf in "$DIR"/kafka*/kafka.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "kafka ($(dirname "$pidf"))"
    done
    for pidf in "$DIR"/clickhouse*/clickhouse.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "clickhouse-server ($(dirname "$pidf"))"
    done
    for pidf in "$CLUSTER_DIR"/node*/clickhouse.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "clickhouse-server ($(dirname "$pidf"))"
    done
    for pidf in "$KCLUSTER_DIR"/node*/kafka.pid; do
      [[ -f "$pidf" ]] && stop_pid "$pidf" "kafka ($(dirname "$pidf"))"
    done
    if [[ -f "$ZKDIR/zookeeper.pid" ]]; then zookeeper_down; fi
    rm -rf "$DIR"
    ;;
  *)
    echo "usage: $0 up|down|status|reset|kafka-up|kafka-down|kafka-cluster-up|kafka-cluster-down|kafka-cluster-node-up|kafka-cluster-node-down|kafka-cluster-node-kill|clickhouse-up|clickhouse-down|clickhouse-secure-up|clickhouse-secure-down|cluster-up|cluster-down|cluster-status|cluster-node-up|cluster-node-down|cluster-node-kill|browser|chdb" >&2
    exit 2
    ;;
esac
