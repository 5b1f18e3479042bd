#!/usr/bin/env bash
# Runs Dovecot 2.4.1 from the Debian 13 root built by .ci/dovecot24-root.sh (never builds it:
# a missing root fails loudly). See tests/support/dovecot24.md for the verified patterns.
#
#   d24.sh root                    print the root's path (host side)
#   d24.sh check                   fail unless the root is complete and runs Dovecot 2.4; print its version
#   d24.sh inner HOST_PATH         print HOST_PATH as seen inside the root (must lie under it)
#   d24.sh doveadm ARGS...         doveadm inside the root (chroot), e.g.
#                                  USER=u d24.sh doveadm -c /srv/.../dovecot.conf \
#                                      mailbox status --no-userdb-lookup all INBOX
#   d24.sh doveconf ARGS...        doveconf inside the root
#   d24.sh run CMD ARGS...         any command inside the root
#   d24.sh serve CONF              start a Dovecot 2.4 master (imap) inside the root in the
#                                  background, with its own /proc in a private mount namespace;
#                                  prints the master's pid once it runs (stop with `stop`)
#   d24.sh stop CONF               stop that master (SIGTERM) and wait until it and all its
#                                  children are gone (the port is free then)
#
# Paths given to doveadm/doveconf (config, HOME, mail paths) are paths INSIDE the root: a store
# at "$(d24.sh root)/srv/maildump-tests/x" is "/srv/maildump-tests/x" for Dovecot.
# The command runs with a clean environment: PATH, TZ=UTC, LC_ALL=C and, when set, USER and HOME
# (USER picks the mail user for --no-userdb-lookup; 2.4 ignores HOME there: set mail_home).
# Calls are independent of each other (no shared mount, no shared state besides the root's
# read-only files), so tests may run them in parallel with separate scratch dirs and configs.
# Environment: MAILDUMP_D24_ROOT overrides the root path (same variable as the build script).
set -euo pipefail

ROOT=${MAILDUMP_D24_ROOT:-/var/cache/maildump-ci/trixie-dovecot24}
ROOT=${ROOT%/}
RECIPE_PREFIX="maildump-d24 recipe "
STAMP=$ROOT/.maildump-d24-stamp

die() { echo "d24.sh: $*" >&2; exit 1; }

require_root() {
    [ -d "$ROOT" ] || die "no Dovecot 2.4 root at $ROOT: build it with .ci/dovecot24-root.sh \
(as root; set MAILDUMP_D24_ROOT for another place)"
    local first=
    [ -f "$STAMP" ] && first=$(head -n1 "$STAMP")
    case "$first" in
    "$RECIPE_PREFIX"*) ;;
    *) die "$ROOT is incomplete (no build stamp): rebuild it with .ci/dovecot24-root.sh" ;;
    esac
    [ -x "$ROOT/usr/bin/doveadm" ] || die "$ROOT has no usr/bin/doveadm: rebuild it with .ci/dovecot24-root.sh"
    [ "$(id -u)" = 0 ] || die "chroot into $ROOT needs root"
}

# A clean environment for the chroot: nothing of the host's PATH or locale leaks in.
in_root() {
    local envv=(PATH=/usr/sbin:/usr/bin:/sbin:/bin TZ=UTC LC_ALL=C)
    [ -n "${USER+x}" ] && envv+=("USER=$USER")
    [ -n "${HOME+x}" ] && envv+=("HOME=$HOME")
    exec chroot "$ROOT" /usr/bin/env -i "${envv[@]}" "$@"
}

# base_dir of CONF as 2.4 resolves it (a path inside the root).
base_dir_of() {
    local base
    base=$(chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin doveconf -c "$1" -h base_dir) ||
        die "doveconf -c $1 -h base_dir failed"
    [ -n "$base" ] || die "doveconf -c $1 -h base_dir printed nothing"
    echo "${base%/}"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
root)
    require_root
    echo "$ROOT"
    ;;
check)
    require_root
    version=$(chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/usr/sbin dovecot --version) ||
        die "dovecot --version failed inside $ROOT"
    case "$version" in 2.4.*) echo "$version" ;; *) die "$ROOT runs Dovecot $version, not 2.4" ;; esac
    ;;
inner)
    require_root
    [ $# = 1 ] || die "usage: d24.sh inner HOST_PATH"
    path=$(realpath -m -- "$1")
    case "$path" in
    "$ROOT") echo / ;;
    "$ROOT"/*) echo "${path#"$ROOT"}" ;;
    *) die "$1 is not inside the Dovecot 2.4 root $ROOT" ;;
    esac
    ;;
doveadm | doveconf)
    require_root
    in_root "$cmd" "$@"
    ;;
run)
    require_root
    [ $# -gt 0 ] || die "usage: d24.sh run CMD [ARGS...]"
    in_root "$@"
    ;;
serve)
    require_root
    [ $# = 1 ] || die "usage: d24.sh serve CONF (a path inside the root)"
    [ -f "$ROOT$1" ] || die "no config $ROOT$1"
    base=$(base_dir_of "$1")
    pidfile=$ROOT$base/master.pid
    # The master's own stdout/stderr (startup errors, and log_path = /dev/stderr) go to a file
    # next to base_dir: a daemon holding the caller's pipe would make the caller hang at EOF.
    errlog=$ROOT$base.stderr
    mkdir -p -- "$(dirname -- "$errlog")"
    # /proc is mounted only in the master's private mount namespace (for /dev/stderr and
    # /proc/self/*): it vanishes with the master's last process, nothing is left to unmount
    # and parallel tests never see it.
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    if ! unshare --mount --propagation private -- /bin/sh -c '
        mount -t proc proc "$1/proc" && exec chroot "$1" /usr/bin/env -i \
            PATH=/usr/sbin:/usr/bin:/sbin:/bin TZ=UTC LC_ALL=C dovecot -c "$2"' \
        sh "$ROOT" "$1" </dev/null >"$errlog" 2>&1; then
        cat "$errlog" >&2
        die "dovecot -c $1 failed to start"
    fi
    # dovecot forks into the background once it listens; the child writes master.pid.
    for _ in $(seq 1 100); do
        if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            cat "$pidfile"
            exit 0
        fi
        sleep 0.1
    done
    cat "$errlog" >&2
    die "dovecot -c $1 did not write $pidfile within 10 s"
    ;;
stop)
    require_root
    [ $# = 1 ] || die "usage: d24.sh stop CONF (a path inside the root)"
    pidfile=$ROOT$(base_dir_of "$1")/master.pid
    [ -s "$pidfile" ] || die "no $pidfile: is a master for $1 running?"
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || die "master pid $pid (from $pidfile) is not running"
    # The master runs in its own session and process group (pgid = its pid) with all its
    # children (imap-login holds the listening socket too): wait until the whole group is gone,
    # so the port is free and the private /proc mount has vanished when we return.
    for _ in $(seq 1 100); do
        kill -0 -- "-$pid" 2>/dev/null || exit 0
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    die "dovecot master $pid and its children did not stop within 10 s (killed)"
    ;;
*)
    die "usage: d24.sh root|check|inner PATH|doveadm ARGS|doveconf ARGS|run CMD|serve CONF|stop CONF"
    ;;
esac
