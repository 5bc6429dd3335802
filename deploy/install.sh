#!/usr/bin/env bash
# Install or upgrade the locker controller on a cabinet's Raspberry Pi (Raspberry Pi OS /
# Debian 12, Python 3.11). Idempotent: run it again after copying a new release; it changes
# only what differs and never overwrites the cabinet's config, certificates or keys.
#
#   sudo deploy/install.sh [--wheelhouse DIR] [--gpio gpiod|rpi|none] [--config FILE]
#                          [--no-apt] [--no-start] [--root DIR] [--no-systemctl]
#
#   --wheelhouse DIR  install offline from DIR (made by scripts/wheelhouse): the release's
#                     wheel and every dependency, checked against the lock's hashes
#   --gpio     GPIO library for the lane I/O: gpiod (libgpiod, every Pi; the default),
#              rpi (rpi-lgpio: the RPi.GPIO API, Pi 1-4), none
#   --config   install FILE as /etc/locker/cabinet.toml when none is there yet
#   --no-apt   do not install Debian packages (python3-venv, redis-server)
#   --no-start install and enable, but do not (re)start the services
#   --root DIR install into DIR instead of / (a throw-away tree to try the installer or
#              to test it): users go into DIR/etc/passwd, no apt, no systemctl, no udevadm;
#              the virtualenv's scripts then name their DIR/... interpreter
#   --no-systemctl  do everything except systemctl and udevadm calls (printed instead):
#              for a machine or container without systemd
#
# What it does, in order (docs/operations.md, "Install"):
#   1. Debian packages; the system user "locker" (groups dialout, gpio, redis);
#   2. a virtualenv in /opt/locker-controller/.venv with the locked dependencies and
#      this release;
#   3. /etc/locker (root:locker 0750) with tls/ and keys/; the example config only if no
#      config exists;
#   4. the cabinet's own Redis: /etc/redis/redis-locker.conf (unix socket only, no TCP
#      port, data in /var/lib/redis/locker), run as redis-server@locker;
#   5. the udev rules and the systemd unit;
#   6. checks: the config as the locker user would read it; then enables and starts only
#      what passed. A config that does not pass is reported item by item, with what the
#      technician must put where; the daemon is then neither enabled nor started.
#
# Exit status: 0 installed (and started unless --no-start); 1 installed, but the config
# does not pass its check yet (nothing enabled); 2 bad usage; 3 a step failed.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
ARGS="$*"
GPIO=gpiod
CONFIG=""
WHEELHOUSE=""
ROOT=/
APT=1
START=1
SYSTEMCTL=1

while [ $# -gt 0 ]; do
    case "$1" in
        --gpio) GPIO="${2:?--gpio needs gpiod, rpi or none}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
        --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}"; shift 2 ;;
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --no-apt) APT=0; shift ;;
        --no-start) START=0; shift ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
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
if [ -n "$WHEELHOUSE" ]; then
    if ! ls "$WHEELHOUSE"/locker_controller-*.whl >/dev/null 2>&1; then
        echo "install: $WHEELHOUSE has no locker_controller wheel (make it with scripts/wheelhouse)" >&2
        exit 2
    fi
    WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)"
fi
if [ "$ROOT" != / ]; then
    if [ ! -d "$ROOT" ] || [ ! -f "$ROOT/etc/passwd" ] || [ ! -f "$ROOT/etc/group" ]; then
        echo "install: --root $ROOT needs etc/passwd and etc/group in it" >&2
        exit 2
    fi
    ROOT="$(cd "$ROOT" && pwd)"
    APT=0
    SYSTEMCTL=0
elif [ "$SYSTEMCTL" -eq 1 ] && [ ! -d /run/systemd/system ]; then
    echo "install: systemd is not running here; use --no-systemctl (and start the" \
        "services by other means) or --root DIR" >&2
    exit 2
fi

# Paths on the target (what the cabinet sees) and where they are written (under --root).
PREFIX=/opt/locker-controller
ETC=/etc/locker
REDIS_CONF=/etc/redis/redis-locker.conf
REDIS_ACL=/etc/redis/redis-locker.acl
REDIS_DEFAULT=/etc/redis/redis-locker.default
REDIS_PASS=/etc/locker/redis-password
REDIS_DIR=/var/lib/redis/locker
R="${ROOT%/}"

say() { echo "install: $*"; }
fail() { echo "install: $*" >&2; exit 3; }

# systemctl/udevadm, or what would have been run.
sysctl() {
    if [ "$SYSTEMCTL" -eq 1 ]; then
        systemctl "$@"
    else
        say "skipped (no systemctl): systemctl $*"
    fi
}

# Copy $1 to $R$2 with mode $3 only when the content differs; true when it wrote.
put() {
    if [ -f "$R$2" ] && cmp -s "$1" "$R$2" && [ "$(stat -c %a "$R$2")" = "${3#0}" ]; then
        return 1
    fi
    install -D -m "$3" "$1" "$R$2"
    say "wrote $2"
    return 0
}

# Users and groups in the target's own files (also right for --root).
uid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/passwd"; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/group"; }
in_group() { awk -F: -v g="$2" -v u="$1" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) f = 1 } END { exit !f }' "$R/etc/group"; }
shadow_root=()
[ "$ROOT" != / ] && shadow_root=(--prefix "$ROOT")

# Make directory $R$1 with mode $2, owner $3, group $4 (names in the target's files).
dir() {
    install -d -m "$2" -o "$(uid_of "$3")" -g "$(gid_of "$4")" "$R$1"
}

# 1. Debian packages, user and groups ---------------------------------------------------
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
command -v redis-server >/dev/null 2>&1 || fail "redis-server is not installed (apt install redis-server, or drop --no-apt)"
[ -n "$(uid_of redis)" ] || fail "no user redis in $R/etc/passwd: is the redis-server package installed?"

[ -n "$(gid_of gpio)" ] || { groupadd "${shadow_root[@]}" --system gpio; say "created group gpio"; }
if [ -z "$(uid_of locker)" ]; then
    useradd "${shadow_root[@]}" --system --user-group --home-dir /var/lib/locker \
        --no-create-home --shell /usr/sbin/nologin --comment "locker controller" locker
    say "created user locker"
fi
dir /var/lib/locker 0750 locker locker
for group in dialout gpio redis; do
    if [ -n "$(gid_of "$group")" ] && ! in_group locker "$group"; then
        usermod "${shadow_root[@]}" -a -G "$group" locker
        say "added locker to group $group"
    fi
done

# 2. the virtualenv, the locked dependencies, this release ------------------------------
dir "$PREFIX" 0755 root root
py="$R$PREFIX/.venv/bin/python"
if [ ! -x "$py" ]; then
    python3 -m venv "$R$PREFIX/.venv"
    say "created $PREFIX/.venv"
fi
locks=(-r "$SRC/requirements/cabinet.txt")
[ "$GPIO" != none ] && locks+=(-r "$SRC/requirements/gpio-$GPIO.txt")
# The release's identity: its code, metadata and locks (a git checkout or a tarball), and
# the wheel when installing from a wheelhouse.
release=$( (cd "$SRC" && find controller drivers simulator pyproject.toml requirements \
    -type f \( -name '*.py' -o -name '*.json' -o -name '*.toml' -o -name '*.txt' \
    -o -name 'py.typed' \) -print0 | sort -z | xargs -0 sha256sum
    if [ -n "$WHEELHOUSE" ]; then sha256sum "$WHEELHOUSE"/locker_controller-*.whl; fi) \
    | sha256sum | cut -c1-16)
stamp="$R$PREFIX/.venv/.installed-$release-$GPIO"
if [ ! -f "$stamp" ]; then
    pip=("$py" -m pip --disable-pip-version-check --quiet)
    # Earlier releases installed RPi.GPIO itself; rpi-lgpio provides the same module and
    # the two cannot share a virtualenv.
    if "${pip[@]}" show RPi.GPIO >/dev/null 2>&1; then
        "${pip[@]}" uninstall -y RPi.GPIO
        say "removed RPi.GPIO (replaced by rpi-lgpio)"
    fi
    if [ -n "$WHEELHOUSE" ]; then
        say "installing the locked dependencies from $WHEELHOUSE (offline)"
        "${pip[@]}" install --no-index --find-links "$WHEELHOUSE" --require-hashes "${locks[@]}" \
            || fail "the wheelhouse does not hold what requirements/ locks (scripts/wheelhouse)"
        say "installing $(basename "$WHEELHOUSE"/locker_controller-*.whl)"
        "${pip[@]}" install --no-index --no-deps --force-reinstall "$WHEELHOUSE"/locker_controller-*.whl
    else
        say "installing the locked dependencies from the package index"
        "${pip[@]}" install --require-hashes "${locks[@]}" \
            || fail "pip could not install the locked dependencies (no network? use --wheelhouse)"
        say "installing the controller from $SRC"
        # Built from a clean copy (a build/ directory in the tree would lend stale
        # modules); same version number, other code: reinstall the project, never its deps.
        copy=$(mktemp -d)
        tar -C "$SRC" --exclude=./build --exclude=./dist --exclude='*.egg-info' \
            --exclude=__pycache__ --exclude=.venv --exclude=.git -cf - . | tar -C "$copy" -xf -
        "${pip[@]}" install --no-deps --force-reinstall "$copy" || { rm -rf "$copy"; fail "pip could not build the controller from $SRC"; }
        rm -rf "$copy"
    fi
    rm -f "$R$PREFIX"/.venv/.installed-*
    touch "$stamp"
fi
put "$SRC/README.md" "$PREFIX/README.md" 0644 || true
if [ -d "$SRC/docs" ]; then
    docs=0
    while IFS= read -r -d '' doc; do
        target="$R$PREFIX/docs/${doc#"$SRC/docs/"}"
        if ! cmp -s "$doc" "$target"; then
            install -D -m 0644 "$doc" "$target"
            docs=$((docs + 1))
        fi
    done < <(find "$SRC/docs" -type f -print0 | sort -z)
    [ "$docs" -gt 0 ] && say "wrote $docs file(s) of $PREFIX/docs"
fi

# 3. configuration directory -----------------------------------------------------------
dir "$ETC" 0750 root locker
dir "$ETC/tls" 0750 root locker
dir "$ETC/keys" 0750 root locker
lgid=$(gid_of locker)
if [ ! -f "$R$ETC/cabinet.toml" ]; then
    if [ -n "$CONFIG" ]; then
        install -m 0640 -o 0 -g "$lgid" "$CONFIG" "$R$ETC/cabinet.toml"
        say "installed $CONFIG as $ETC/cabinet.toml"
    else
        install -m 0640 -o 0 -g "$lgid" "$SRC/deploy/cabinet.example.toml" "$R$ETC/cabinet.toml"
        say "installed the EXAMPLE config as $ETC/cabinet.toml: edit it before the first start"
    fi
elif [ -n "$CONFIG" ] && ! cmp -s "$CONFIG" "$R$ETC/cabinet.toml"; then
    say "$ETC/cabinet.toml exists and differs from $CONFIG: left as it is"
fi

# 4. the cabinet's own Redis ---------------------------------------------------------------
dir /var/lib/redis 0750 redis redis
dir "$REDIS_DIR" 0700 redis redis
# An earlier release kept the cabinet's append-only files in /var/lib/redis itself: move
# them into the cabinet's own directory, once, before the new config starts (nothing the
# daemon committed is left behind).
if [ -f "$R$REDIS_CONF" ] && grep -qx 'dir /var/lib/redis' "$R$REDIS_CONF" \
        && [ -d "$R/var/lib/redis/appendonlydir" ] && [ ! -e "$R$REDIS_DIR/appendonlydir" ]; then
    sysctl stop redis-server@locker
    mv "$R/var/lib/redis/appendonlydir" "$R$REDIS_DIR/appendonlydir"
    say "moved the store of an earlier release to $REDIS_DIR"
fi
redis_changed=0
if put "$SRC/deploy/redis.conf" "$REDIS_CONF" 0640; then
    redis_changed=1
fi
chown "0:$(gid_of redis)" "$R$REDIS_CONF"
# Its ACL: the daemon's user "locker" (its commands, its keys) with a random password that
# only the daemon's user can read; unauthenticated connections can do nothing.
if [ ! -s "$R$REDIS_PASS" ]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr -d '=+/\n' >"$R$REDIS_PASS")
    say "created $REDIS_PASS"
fi
chown "$(uid_of locker):$(gid_of locker)" "$R$REDIS_PASS"
chmod 0400 "$R$REDIS_PASS"
# The default user's password hash: of random bytes nobody keeps (see the ACL file).
if [ ! -s "$R$REDIS_DEFAULT" ]; then
    (umask 077; head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1 >"$R$REDIS_DEFAULT")
fi
chown 0:0 "$R$REDIS_DEFAULT"
chmod 0400 "$R$REDIS_DEFAULT"
acl_tmp=$(mktemp)
sed -e '/^#/d' -e "s/@PASSWORD_SHA256@/$(head -n1 "$R$REDIS_PASS" | tr -d '\n' | sha256sum | cut -d' ' -f1)/" \
    -e "s/@DEFAULT_SHA256@/$(head -n1 "$R$REDIS_DEFAULT" | tr -d '\n')/" \
    "$SRC/deploy/redis-locker.acl" >"$acl_tmp"
if put "$acl_tmp" "$REDIS_ACL" 0640; then
    redis_changed=1
fi
rm -f "$acl_tmp"
chown "0:$(gid_of redis)" "$R$REDIS_ACL"

# 5. udev rules and the systemd unit -----------------------------------------------------
if put "$SRC/deploy/udev/99-locker-rs485.rules" /etc/udev/rules.d/99-locker-rs485.rules 0644; then
    if [ "$SYSTEMCTL" -eq 1 ]; then
        udevadm control --reload-rules && udevadm trigger --subsystem-match=tty \
            --subsystem-match=gpio || true
    else
        say "skipped (no systemctl): udevadm control --reload-rules; udevadm trigger"
    fi
fi
unit_changed=0
if put "$SRC/deploy/systemd/locker-controller.service" \
        /etc/systemd/system/locker-controller.service 0644; then
    unit_changed=1
fi
if [ $((unit_changed + redis_changed)) -gt 0 ]; then
    sysctl daemon-reload
fi

# 6. check, then enable and start only what passed ------------------------------------
# The cabinet's Redis first: the daemon needs it; a unix socket only, so the stock
# redis-server on 127.0.0.1:6379 (if any) is left alone.
sysctl enable --quiet redis-server@locker
if [ "$START" -eq 1 ]; then
    if [ "$redis_changed" -eq 1 ]; then sysctl restart redis-server@locker; else sysctl start redis-server@locker; fi
    if [ "$SYSTEMCTL" -eq 1 ]; then
        for _ in $(seq 50); do
            REDISCLI_AUTH=$(head -n1 "$R$REDIS_PASS") redis-cli --user locker -s /run/redis-locker/redis.sock ping >/dev/null 2>&1 && break
            sleep 0.2
        done
        REDISCLI_AUTH=$(head -n1 "$R$REDIS_PASS") redis-cli --user locker -s /run/redis-locker/redis.sock ping >/dev/null 2>&1 \
            || fail "redis-server@locker does not answer on /run/redis-locker/redis.sock: journalctl -u redis-server@locker"
    fi
fi

# The config check as the locker user (its groups included), as the daemon will read it:
# a key file only root can read fails here, not at the first start.
lgroups=$(awk -F: -v u=locker '{ n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) print $3 }' "$R/etc/group" | paste -sd, -)
check_out=$(cd / && setpriv --reuid "$(uid_of locker)" --regid "$lgid" \
        --groups "${lgroups:-$lgid}" -- "$py" -m controller.daemon \
        --config "$R$ETC/cabinet.toml" --check 2>&1) && check_ok=1 || check_ok=0
if [ "$check_ok" -eq 1 ]; then
    say "config check passed: $check_out"
    sysctl enable --quiet locker-controller
    if [ "$START" -eq 1 ]; then
        sysctl restart locker-controller
        say "locker-controller (re)started; follow it with: journalctl -u locker-controller -f"
    fi
    [ "$unit_changed" -eq 1 ] && say "systemd unit updated"
    say "done"
    exit 0
fi

# Not passing: say exactly what to fill in, enable and start nothing of the daemon.
say "the config $ETC/cabinet.toml does not pass its check yet; the daemon is NOT enabled."
echo "$check_out" | sed -n 's/^[^ ]*cabinet\.toml: /  - /p' | sed "s#$R##g"
if cmp -s "$R$ETC/cabinet.toml" "$SRC/deploy/cabinet.example.toml"; then
    cat <<EOF
install: it is still the example. Fill in, in $ETC/cabinet.toml:
  - [cabinet] site, id, name: this cabinet's identity (ids: a-z, 0-9, -)
  - [mqtt] host, port: the dispatch broker
  - [[buses]], [[boards]], [[compartments]]: this cabinet's wiring (docs/configuration.md)
  - [lane]: backend "gpiod" (every Pi) or "rpigpio" (Pi 1-4), and the pins
and put these files in place (the config names them relative to $ETC):
  - $ETC/tls/ca.crt        the CA of the broker's certificate
  - $ETC/tls/cabinet.crt   this cabinet's client certificate (CN "SITE/CABINET")
  - $ETC/tls/cabinet.key   its key: chown locker $ETC/tls/cabinet.key; chmod 0600
  - $ETC/keys/dispatch-1.pub   dispatch's public key (lockerctl keygen writes it)
EOF
fi
cat <<EOF
install: then check and finish with:
  $PREFIX/.venv/bin/lockerctl config check $ETC/cabinet.toml
  sudo $SRC/deploy/install.sh $ARGS   (again: it enables and starts the daemon once the check passes)
EOF
exit 1
