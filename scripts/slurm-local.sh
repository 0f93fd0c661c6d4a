#!/usr/bin/env bash
# A private one-node Slurm cluster on loopback, for the tests of `--engine slurm`:
#   scripts/slurm-local.sh start DIR   # installs slurm-wlm and munge if missing; prints SLURM_CONF=…
#   scripts/slurm-local.sh stop DIR    # stops what start started, by PID
# Everything lives under DIR (config, munge socket and key, state, logs); no systemd, nothing
# system-wide is changed. MaxArraySize is 4 (CBENCH_SLURM_MAX_ARRAY) so that the bundled
# dataset's 10 pairs need several arrays, as a large run does on a real site.
set -euo pipefail
cmd="${1:?start|stop}"
dir="${2:?a directory}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

stop() {
    for name in slurmd slurmctld munged; do
        if [ -f "$dir/$name.pid" ]; then
            pid="$(cat "$dir/$name.pid")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/$name.pid"
        fi
    done
}

if [ "$cmd" = stop ]; then
    stop
    exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
    else
        echo "slurm-local: slurm-wlm and munge are needed (apt-get install slurm-wlm munge)" >&2
        exit 1
    fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
host="$(hostname -s)"
ctld_port="$(free_port)"
d_port="$(free_port)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2/1024/2)}' /proc/meminfo)"

# munge: a private key and socket.
if [ ! -f "$dir/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
fi
chmod 0400 "$dir/munge.key"
chmod 0700 "$dir"
munged -F --force --key-file="$dir/munge.key" --socket="$dir/munge.sock" \
    --pid-file="$dir/munged.pid.munge" --log-file="$dir/munged.log" --seed-file="$dir/munge.seed" \
    > "$dir/munged.out" 2>&1 < /dev/null &
echo $! > "$dir/munged.pid"
for _ in $(seq 50); do [ -S "$dir/munge.sock" ] && break; sleep 0.1; done

mkdir -p "$dir/state" "$dir/spool"
cat > "$dir/slurm.conf" <<EOF
ClusterName=cbtest
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${d_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${dir}/munge.sock
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldPidFile=${dir}/slurmctld.pid.slurm
SlurmdPidFile=${dir}/slurmd.pid.slurm
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdLogFile=${dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MaxArraySize=${CBENCH_SLURM_MAX_ARRAY:-4}
MinJobAge=600
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -D -f "$SLURM_CONF" > "$dir/slurmctld.out" 2>&1 < /dev/null &
echo $! > "$dir/slurmctld.pid"
slurmd -D -f "$SLURM_CONF" > "$dir/slurmd.out" 2>&1 < /dev/null &
echo $! > "$dir/slurmd.pid"
for _ in $(seq 100); do
    if sinfo -h -o '%t' 2>/dev/null | grep -q idle; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm-local: the node did not become idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
stop
exit 1
