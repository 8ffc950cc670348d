#!/bin/bash
# Install the orchestrator on a real Debian 12 host (and in the Vagrant VMs).
#
#   deploy/install.sh server [--advertise-address IP] [--cluster-name NAME]
#       packages, /opt/orchestrator, the units; `orchestrator init` once; starts
#       orchestrator.service; writes the join command to /var/lib/orchestrator/join-command
#   deploy/install.sh agent SERVER:PORT --token TOKEN --ca-hash sha256:HEX
#                           [--node-ip IP] [--node-name NAME]
#       packages, /opt/orchestrator, the units, dockerd; `orch-agent join` once;
#       starts orch-agent.service
#   deploy/install.sh files
#       only packages, /opt/orchestrator, the symlinks and the units
#
# Idempotent: run it again after `git pull` to upgrade (the services restart).
# Environment: ORCH_SRC (the checkout, default: this script's ..), ORCH_PREFIX
# (default /opt/orchestrator).
set -euo pipefail

SRC="${ORCH_SRC:-$(cd "$(dirname "$0")/.." && pwd)}"
PREFIX="${ORCH_PREFIX:-/opt/orchestrator}"
SERVER_DIR=/var/lib/orchestrator
AGENT_DIR=/var/lib/orch-agent
UNIT_DIR=/etc/systemd/system

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
log() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

role="${1:-}"; shift || true
case "$role" in server|agent|files) ;; -h|--help) usage 0 ;; *) usage ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $role $*)"
[ -f "$SRC/pyproject.toml" ] || die "$SRC is not an orchestrator checkout (set ORCH_SRC)"

install_packages() {
    local pkgs=(python3 python3-venv iproute2 iptables ca-certificates procps kmod)
    if [ "$role" = agent ]; then pkgs+=(docker.io conntrack); fi
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "Debian packages: ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

install_python() {
    log "Python environment in $PREFIX/venv from $SRC"
    mkdir -p "$PREFIX"
    [ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
    "$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
    # A copy of the source next to the venv: the units' documentation points there,
    # and the venv must not depend on where the checkout happens to live.
    rm -rf "$PREFIX/src.new"
    mkdir -p "$PREFIX/src.new"
    tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=__pycache__ \
        --exclude=.vagrant -cf - . | tar -C "$PREFIX/src.new" -xf -
    rm -rf "$PREFIX/src" && mv "$PREFIX/src.new" "$PREFIX/src"
    "$PREFIX/venv/bin/python" -m pip install -q --upgrade "$PREFIX/src"
    for cmd in orchctl orchestrator orch-agent; do
        ln -sfn "$PREFIX/venv/bin/$cmd" "/usr/local/bin/$cmd"
    done
}

install_units() {
    install -m 0644 "$SRC/deploy/systemd/orchestrator.service" "$UNIT_DIR/orchestrator.service"
    install -m 0644 "$SRC/deploy/systemd/orch-agent.service" "$UNIT_DIR/orch-agent.service"
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
}

node_settings() {
    # Pods on a bridge need forwarding, and Services need bridged traffic to pass
    # through iptables (hairpin); VXLAN joins the nodes.
    cat > /etc/modules-load.d/orchestrator.conf <<'MODS'
br_netfilter
vxlan
overlay
MODS
    cat > /etc/sysctl.d/90-orchestrator.conf <<'SYSCTL'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
SYSCTL
    modprobe br_netfilter 2>/dev/null || true
    modprobe vxlan 2>/dev/null || true
    sysctl -q --system >/dev/null || true
}

first_address() {
    # The source address of the default route (a route lookup only: nothing is sent).
    ip -4 -o route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1
}

do_server() {
    local advertise="" name="orchestrator"
    while [ $# -gt 0 ]; do
        case "$1" in
            --advertise-address) advertise="$2"; shift 2 ;;
            --cluster-name) name="$2"; shift 2 ;;
            *) die "unknown server option $1" ;;
        esac
    done
    advertise="${advertise:-$(first_address)}"
    [ -n "$advertise" ] || die "cannot tell this host's address: pass --advertise-address"
    if [ ! -f "$SERVER_DIR/cluster.json" ]; then
        log "orchestrator init (advertise $advertise)"
        orchestrator init --data-dir "$SERVER_DIR" --advertise-address "$advertise" \
            --cluster-name "$name" | tee "$SERVER_DIR.init.log"
        grep -o 'orch-agent join .*' "$SERVER_DIR.init.log" > "$SERVER_DIR/join-command"
        chmod 600 "$SERVER_DIR/join-command"
        rm -f "$SERVER_DIR.init.log"
    fi
    mkdir -p /root/.orch
    [ -f /root/.orch/config ] || install -m 0600 "$SERVER_DIR/admin.conf" /root/.orch/config
    systemctl enable orchestrator.service
    systemctl restart orchestrator.service
    export ORCHCONFIG="$SERVER_DIR/admin.conf"
    for _ in $(seq 1 60); do orchctl version >/dev/null 2>&1 && break; sleep 1; done
    orchctl version
    log "join nodes with: deploy/install.sh agent $(cut -d' ' -f3- "$SERVER_DIR/join-command")"
    log "(more tokens: orchctl token create --print-join-command)"
}

do_agent() {
    local server="${1:-}"; shift || true
    [ -n "$server" ] && [ "${server#-}" = "$server" ] || die "agent needs SERVER:PORT first"
    local token="" ca_hash="" node_ip="" node_name=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --token) token="$2"; shift 2 ;;
            --ca-hash) ca_hash="$2"; shift 2 ;;
            --node-ip) node_ip="$2"; shift 2 ;;
            --node-name) node_name="$2"; shift 2 ;;
            *) die "unknown agent option $1" ;;
        esac
    done
    node_ip="${node_ip:-$(first_address)}"
    node_name="${node_name:-$(hostname -s)}"
    [ -n "$node_ip" ] || die "cannot tell this host's address: pass --node-ip"
    systemctl enable --now docker.service
    if [ ! -f "$AGENT_DIR/agent.conf" ]; then
        [ -n "$token" ] && [ -n "$ca_hash" ] || die "joining needs --token and --ca-hash"
        log "orch-agent join $server as $node_name"
        orch-agent join "$server" --token "$token" --ca-hash "$ca_hash" \
            --node-name "$node_name" --data-dir "$AGENT_DIR"
    fi
    printf 'NODE_IP=%s\nAGENT_ARGS=\n' "$node_ip" > /etc/default/orch-agent
    systemctl enable orch-agent.service
    systemctl restart orch-agent.service
    log "agent running on $node_name ($node_ip); see: journalctl -u orch-agent"
}

install_packages
install_python
install_units
case "$role" in
    server) do_server "$@" ;;
    agent) node_settings; do_agent "$@" ;;
    files) log "installed; nothing started" ;;
esac
