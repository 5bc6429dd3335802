#!/usr/bin/env bash
# Install or upgrade the locker controller on a cabinet's Raspberry Pi (Debian/Raspberry Pi
# OS). Idempotent: run it again after copying a new release; it changes only what differs
# and never overwrites the cabinet's config or keys.
#
#   sudo deploy/install.sh [--gpio gpiod|rpi|none] [--config FILE] [--no-apt] [--no-start]
#
#   --gpio     GPIO library for lane I/O: gpiod (Pi 5, default), rpi (RPi.GPIO, Pi 1-4), none
#   --config   install FILE as /etc/locker/cabinet.toml when none is there yet
#   --no-apt   do not install Debian packages (python3-venv, redis-server)
#   --no-start install and enable, but do not (re)start the services
#
# What it does, in order (see docs/operations.md):
#   1. the system user and group "locker" (groups dialout, gpio, redis);
#   2. a virtualenv in /opt/locker-controller/.venv with this release installed in it;
#   3. /etc/locker (root:locker 0750); the example config only if no config exists;
#   4. redis-server as the template unit redis-server@locker with deploy/redis.conf;
#   5. the udev rules (stable /dev/ttyLOCKER* names) and the systemd unit;
#   6. a config check as the locker user, then (re)start the daemon if it passes.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/locker-controller
ETC=/etc/locker
GPIO=gpiod
CONFIG=""
APT=1
START=1

while [ $# -gt 0 ]; do
    case "$1" in
        --gpio) GPIO="${2:?--gpio needs gpiod, rpi or none}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
        --no-apt) APT=0; shift ;;
        --no-start) START=0; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$GPIO" in gpiod|rpi|none) ;; *) echo "install: --gpio must be gpiod, rpi or none" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root (sudo $0)" >&2
    exit 2
fi
if [ -n "$CONFIG" ] && [ ! -f "$CONFIG" ]; then
    echo "install: $CONFIG: no such file" >&2
    exit 2
fi

say() { echo "install: $*"; }

# Copy $1 to $2 with mode $3 only when the content differs; prints whether it changed.
put() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        return 1
    fi
    install -D -m "$3" "$1" "$2"
    say "wrote $2"
    return 0
}

# 0. Debian packages -------------------------------------------------------------------
if [ "$APT" -eq 1 ]; then
    need=()
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
fi

# 1. user and groups -------------------------------------------------------------------
getent group gpio >/dev/null || groupadd --system gpio
if ! getent passwd locker >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/locker --create-home \
        --shell /usr/sbin/nologin --comment "locker controller" locker
    say "created user locker"
fi
for group in dialout gpio redis; do
    if getent group "$group" >/dev/null && ! id -nG locker | tr ' ' '\n' | grep -qx "$group"; then
        usermod -a -G "$group" locker
        say "added locker to group $group"
    fi
done

# 2. the virtualenv and this release ---------------------------------------------------
install -d -m 0755 "$PREFIX"
if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    python3 -m venv "$PREFIX/.venv"
    say "created $PREFIX/.venv"
fi
extras=""
[ "$GPIO" != none ] && extras="[$GPIO]"
# The release's identity: a hash of its code and metadata (a git checkout or a tarball).
release=$(cd "$SRC" && find controller drivers simulator pyproject.toml -type f \
    \( -name '*.py' -o -name '*.json' -o -name '*.toml' -o -name 'py.typed' \) -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
stamp="$PREFIX/.venv/.installed-$release-$GPIO"
if [ ! -f "$stamp" ]; then
    say "installing the controller$extras into $PREFIX/.venv"
    "$PREFIX/.venv/bin/python" -m pip install -q --upgrade pip
    "$PREFIX/.venv/bin/python" -m pip install -q "$SRC$extras"
    # Same version number, other code: reinstall the project itself (not its dependencies).
    "$PREFIX/.venv/bin/python" -m pip install -q --force-reinstall --no-deps "$SRC"
    rm -f "$PREFIX"/.venv/.installed-*
    touch "$stamp"
fi
put "$SRC/README.md" "$PREFIX/README.md" 0644 || true
if [ -d "$SRC/docs" ]; then
    install -d -m 0755 "$PREFIX/docs"
    cp -r "$SRC/docs/." "$PREFIX/docs/"
fi

# 3. configuration directory -----------------------------------------------------------
install -d -m 0750 -o root -g locker "$ETC"
if [ ! -f "$ETC/cabinet.toml" ]; then
    if [ -n "$CONFIG" ]; then
        install -m 0640 -o root -g locker "$CONFIG" "$ETC/cabinet.toml"
        say "installed $CONFIG as $ETC/cabinet.toml"
    else
        install -m 0640 -o root -g locker "$SRC/deploy/cabinet.example.toml" "$ETC/cabinet.toml"
        say "installed the EXAMPLE config as $ETC/cabinet.toml: edit it before the first start"
    fi
elif [ -n "$CONFIG" ] && ! cmp -s "$CONFIG" "$ETC/cabinet.toml"; then
    say "$ETC/cabinet.toml exists and differs from $CONFIG: left as it is"
fi

# 4. redis-server for the local store ----------------------------------------------------
if command -v redis-server >/dev/null 2>&1; then
    if put "$SRC/deploy/redis.conf" /etc/redis/redis-locker.conf 0640; then
        chown redis:redis /etc/redis/redis-locker.conf 2>/dev/null || true
        systemctl daemon-reload
        [ "$START" -eq 1 ] && systemctl restart redis-server@locker
    fi
    systemctl enable --quiet redis-server@locker
    [ "$START" -eq 1 ] && systemctl start redis-server@locker
fi

# 5. udev rules and the systemd unit -----------------------------------------------------
if put "$SRC/deploy/udev/99-locker-rs485.rules" /etc/udev/rules.d/99-locker-rs485.rules 0644; then
    udevadm control --reload-rules && udevadm trigger --subsystem-match=tty \
        --subsystem-match=gpio || true
fi
unit_changed=0
if put "$SRC/deploy/systemd/locker-controller.service" \
        /etc/systemd/system/locker-controller.service 0644; then
    unit_changed=1
    systemctl daemon-reload
fi
systemctl enable --quiet locker-controller

# 6. check the config, then start ------------------------------------------------------
if runuser -u locker -- "$PREFIX/.venv/bin/locker-controller" --config "$ETC/cabinet.toml" \
        --check; then
    if [ "$START" -eq 1 ]; then
        systemctl restart locker-controller
        say "locker-controller (re)started; follow it with: journalctl -u locker-controller -f"
    fi
else
    say "the config does not pass the check: fix $ETC/cabinet.toml, then"
    say "  lockerctl config check $ETC/cabinet.toml && systemctl restart locker-controller"
    exit 1
fi
[ "$unit_changed" -eq 1 ] && say "systemd unit updated"
say "done"
