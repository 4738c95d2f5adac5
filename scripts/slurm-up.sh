#!/usr/bin/env bash
# A private Slurm cluster on 127.0.0.1 for tests and local trials (Debian/Ubuntu, run as root).
#
#   scripts/slurm-up.sh [BASE]        # BASE default: $DISTIL_SLURM_DIR or /tmp/distil-slurm
#   export SLURM_CONF=BASE/etc/slurm.conf
#   sbatch --array=0-1 --cpus-per-task=1 --mem=2G slurm/precompute.sbatch --input ... --output ...
#   scripts/slurm-down.sh [BASE]
#
# NODES=2 starts two slurmd daemons (node1, node2) on this host, for multi-node trials: both listen
# on 127.0.0.1 (ports 17001/17002), and as root `127.0.0.1 node1 node2` is added to /etc/hosts
# (once) so that a rendezvous on the first host of SLURM_JOB_NODELIST resolves.
# WITH_DBD=1 adds MariaDB + slurmdbd so that `sacct` works; submitit works without it (it warns
# "Bypassing sacct error" and still collects results), so it is off by default.
# Exit code 3: Slurm could not be installed (tests skip on it).
set -euo pipefail
BASE=${1:-${DISTIL_SLURM_DIR:-/tmp/distil-slurm}}
WITH_DBD=${WITH_DBD:-0}
NODES=${NODES:-1}
install() {
  if [ "$(id -u)" != 0 ]; then echo "slurm-up: $* missing and not root: install it with apt-get" >&2; exit 3; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; } \
    || { echo "slurm-up: apt-get install $* failed" >&2; exit 3; }
}
command -v slurmctld >/dev/null && command -v munged >/dev/null || install slurm-wlm munge
if [ "$WITH_DBD" = 1 ]; then
  command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null || install slurmdbd mariadb-server
fi
if [ -f "$BASE/run/slurmctld.pid" ] && kill -0 "$(cat "$BASE/run/slurmctld.pid")" 2>/dev/null; then
  echo "slurm-up: already running; export SLURM_CONF=$BASE/etc/slurm.conf"; exit 0
fi
mkdir -p "$BASE"/{etc,spool/ctld,log,run,db,munge}
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / NODES / 2 ))  # half the RAM, split by node
# munge with its own key and socket, so nothing system-wide is touched.
[ -f "$BASE/munge/munge.key" ] || dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1 count=1024 status=none
chown -R munge:munge "$BASE/munge"; chmod 755 "$BASE/munge"; chmod 400 "$BASE/munge/munge.key"
runuser -u munge -- test -x "$BASE/munge" || {
  echo "slurm-up: the munge user cannot reach $BASE/munge: make $BASE and its parents world-traversable (chmod 755)" >&2
  exit 1; }
runuser -u munge -- /usr/sbin/munged --key-file="$BASE/munge/munge.key" \
  --socket="$BASE/munge/munge.sock" --pid-file="$BASE/munge/munged.pid" \
  --log-file="$BASE/munge/munged.log" --seed-file="$BASE/munge/munged.seed"
if [ "$WITH_DBD" = 1 ]; then ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoragePass=$BASE/munge/munge.sock"; else ACCT="AccountingStorageType=accounting_storage/none"; fi
if [ "$NODES" = 2 ] && ! getent hosts node1 >/dev/null; then
  if [ "$(id -u)" = 0 ] && [ -w /etc/hosts ]; then echo "127.0.0.1 node1 node2  # distil-jobs slurm-up.sh" >> /etc/hosts
  else echo "slurm-up: node1/node2 do not resolve: add '127.0.0.1 node1 node2' to /etc/hosts" >&2; fi
fi
if [ "$NODES" = 2 ]; then
  NODELINES="NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
NodeName=node2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17002 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP"
else
  NODELINES="NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP"
fi
# DefMemPerCPU: without it each job takes all memory and array tasks run one at a time.
# cred_expire=10: a requeued job waits cred_expire+1 s before it may start again (default 120 s).
cat > "$BASE/etc/slurm.conf" <<CONF
ClusterName=distil
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$BASE/munge/munge.sock,cred_expire=10
CredType=cred/munge
StateSaveLocation=$BASE/spool/ctld
SlurmdSpoolDir=$BASE/spool/d-%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
# Schedule every 2 s: by default a requeued job, eligible after cred_expire+1 s, waits for the
# next 30-60 s scheduling pass.
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
$ACCT
JobAcctGatherType=jobacct_gather/linux
JobRequeue=1
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
SlurmctldDebug=info
SlurmdDebug=info
$NODELINES
CONF
export SLURM_CONF="$BASE/etc/slurm.conf"
if [ "$WITH_DBD" = 1 ]; then
  [ -d "$BASE/db/data/mysql" ] || mariadb-install-db --no-defaults --datadir="$BASE/db/data" --user=root \
      --auth-root-authentication-method=normal > "$BASE/log/mariadb-install.log" 2>&1
  setsid mariadbd --no-defaults --datadir="$BASE/db/data" --user=root --bind-address=127.0.0.1 \
    --port=3307 --socket="$BASE/db/mysqld.sock" --pid-file="$BASE/run/mysqld.pid" \
    --log-error="$BASE/log/mariadb.log" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 100); do mariadb-admin --socket="$BASE/db/mysqld.sock" -uroot ping >/dev/null 2>&1 && break; sleep 0.1; done
  DBPW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mariadb --socket="$BASE/db/mysqld.sock" -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPW'; ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPW'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  umask 077
  cat > "$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$BASE/munge/munge.sock
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=$DBPW
StorageLoc=slurm_acct_db
CONF
  umask 022
  slurmdbd
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.1; done
fi
slurmctld -i
if [ "$NODES" = 2 ]; then slurmd -N node1; slurmd -N node2; else slurmd -N localhost; fi
for _ in $(seq 1 150); do
  [ -f "$BASE/run/slurmctld.pid" ] && ! kill -0 "$(cat "$BASE/run/slurmctld.pid")" 2>/dev/null && {
    echo 'slurm-up: slurmctld died:' >&2; tail -5 "$BASE/log/slurmctld.log" >&2; exit 1; }
  [ "$(timeout 5 sinfo -h -o '%T' 2>/dev/null | sort -u)" = idle ] && break
  sleep 0.2
done
sinfo
echo "export SLURM_CONF=$SLURM_CONF"
