#!/bin/sh
# Install the earshot agent on Raspberry Pi OS / Debian: a venv with the base package (agent only, no torch),
# a dedicated system user, /etc/earshot/config.toml from the example, and the hardened systemd unit.
#
#   sudo deploy/install.sh [--device-id ID] [--source SPEC] [--pip-args ARGS] [--no-start]
#   deploy/install.sh --root /tmp/pi --dry-run      # show what would happen, change nothing
#
# --root DIR installs the files under DIR as if it were / and skips everything that touches the live
# system (apt-get, useradd, chown, systemctl): for image building and for the test suite.
set -eu

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --device-id ID   MQTT/Home Assistant name of this sensor (default: the host name)
  --prefix DIR     where the venv goes (default /opt/earshot)
  --root DIR       install under DIR as if it were /; skips apt-get, useradd, chown and systemctl
  --source SPEC    what pip installs (default: this checkout); e.g. earshot==0.1.0 or a wheel file
  --pip-args ARGS  extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels" offline
  --python PATH    interpreter for the venv (default python3)
  --force-config   overwrite an existing /etc/earshot/config.toml (default: keep the operator's edits)
  --no-start       install and enable the unit, but do not start it
  --dry-run        print every step, change nothing
  -h, --help       this help
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
DEVICE_ID=""
PREFIX=/opt/earshot
ROOT=""
SOURCE=$REPO
PIP_ARGS=""
PYTHON=python3
FORCE_CONFIG=0
START=1
DRY_RUN=0

# An option's value must be there and must not be the next option (--device-id --dry-run is a typo).
need_value() {
    [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
    case $2 in -*) die "$1 needs a value, got option '$2'" ;; esac
}

while [ $# -gt 0 ]; do
    case $1 in
        --device-id) need_value "$@"; DEVICE_ID=$2; shift 2 ;;
        --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
        --root) need_value "$@"; ROOT=$2; shift 2 ;;
        --source) need_value "$@"; SOURCE=$2; shift 2 ;;
        --pip-args) [ $# -ge 2 ] || die "--pip-args needs a value"; PIP_ARGS=$2; shift 2 ;;
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --force-config) FORCE_CONFIG=1; shift ;;
        --no-start) START=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

case $PREFIX in /*) ;; *) die "--prefix must be an absolute path, got '$PREFIX'" ;; esac
if [ -n "$ROOT" ]; then
    case $ROOT in /*) ;; *) ROOT=$(pwd)/$ROOT ;; esac
    ROOT=${ROOT%/}
fi
DEVICE_ID_GIVEN=$DEVICE_ID
if [ -z "$DEVICE_ID" ]; then
    # Same rule as edge_agent.config.default_device_id: the host name, safe as an MQTT topic level. Shown
    # only: the config leaves device_id unset, so a cloned SD card takes its own host name at run time.
    DEVICE_ID=$(hostname | tr '/+# ' '----')
fi
case $DEVICE_ID in
    ''|*[!A-Za-z0-9._-]*) die "--device-id must be letters, digits, '.', '_' or '-', got '$DEVICE_ID'" ;;
esac
[ ${#DEVICE_ID} -le 64 ] || die "--device-id is longer than 64 characters"
if [ -z "$ROOT" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or use --root DIR / --dry-run"
fi

VENV=$PREFIX/venv
ETC=$ROOT/etc/earshot
UNIT=$ROOT/etc/systemd/system/earshot-agent.service
STATE=$ROOT/var/lib/earshot

# step "description" command...: print, then run unless --dry-run.
step() {
    description=$1; shift
    echo "==> $description"
    if [ "$DRY_RUN" = 1 ]; then
        echo "    would run: $*"
    else
        "$@"
    fi
}

# live "description" command...: a step on the live system only; skipped under --root.
live() {
    if [ -n "$ROOT" ]; then
        echo "==> skip (--root): $1"
    else
        step "$@"
    fi
}

write_config() {
    # Keep the operator's edits unless --force-config; the device id is the only value filled in.
    if [ -e "$ETC/config.toml" ] && [ "$FORCE_CONFIG" = 0 ]; then
        echo "    keeping existing $ETC/config.toml (use --force-config to replace it)"
        return 0
    fi
    mkdir -p "$ETC"
    if [ -n "$DEVICE_ID_GIVEN" ]; then
        sed "s|^# device_id = .*|device_id = \"$DEVICE_ID_GIVEN\"|" "$HERE/config.example.toml" > "$ETC/config.toml.new"
    else
        cp "$HERE/config.example.toml" "$ETC/config.toml.new"
    fi
    chmod 0640 "$ETC/config.toml.new"
    mv "$ETC/config.toml.new" "$ETC/config.toml"
}

write_env_file() {
    # Secrets live here, never in config.toml; created once, then left to the operator.
    [ -e "$ETC/earshot.env" ] && { echo "    keeping existing $ETC/earshot.env"; return 0; }
    mkdir -p "$ETC"
    (umask 077 && printf '%s\n' "# Secrets for earshot-agent.service (mode 0640, root:earshot). Example:" \
        "# EARSHOT_MQTT_PASSWORD=change-me" "# EARSHOT_WEBHOOK_TOKEN=change-me" > "$ETC/earshot.env")
    chmod 0640 "$ETC/earshot.env"
}

write_unit() {
    mkdir -p "$(dirname "$UNIT")"
    sed "s|/opt/earshot/venv|$VENV|g" "$HERE/systemd/earshot-agent.service" > "$UNIT"
    chmod 0644 "$UNIT"
}

make_venv() {
    mkdir -p "$ROOT$PREFIX"
    "$PYTHON" -m venv "$ROOT$VENV"
    # The base package only: the agent. No [train] extra, so no torch on the Pi.
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
    "$ROOT$VENV/bin/pip" install --quiet $PIP_ARGS "$SOURCE"
}

echo "earshot install: device_id=$DEVICE_ID prefix=$PREFIX root=${ROOT:-/}$( [ "$DRY_RUN" = 1 ] && echo ' (dry run)')"
live "install system packages (python3-venv, PortAudio, libsndfile)" \
    apt-get install -y --no-install-recommends python3-venv libportaudio2 libsndfile1
live "create system user earshot (group audio for the microphone)" \
    sh -c 'id earshot >/dev/null 2>&1 || useradd --system --user-group --groups audio --home-dir /var/lib/earshot --shell /usr/sbin/nologin earshot'
step "create venv $ROOT$VENV and install $SOURCE" make_venv
step "write $ETC/config.toml (device_id = ${DEVICE_ID_GIVEN:-unset: the host name, now $DEVICE_ID})" write_config
step "write $ETC/earshot.env (secrets placeholder)" write_env_file
step "create state dir $STATE" mkdir -p "$STATE"
step "install $UNIT" write_unit
live "own config and state by earshot" \
    sh -c "chown root:earshot '$ETC' '$ETC/config.toml' '$ETC/earshot.env' && chmod 0750 '$ETC' && chown earshot:earshot '$STATE'"
live "check the config" "$ROOT$VENV/bin/earshot" agent --check-config "$ETC/config.toml"
live "reload systemd and enable earshot-agent" sh -c 'systemctl daemon-reload && systemctl enable earshot-agent.service'
if [ "$START" = 1 ]; then
    live "start earshot-agent" systemctl restart earshot-agent.service
fi
echo "done. Set the MQTT password in $ETC/earshot.env, edit $ETC/config.toml, then: systemctl restart earshot-agent"
