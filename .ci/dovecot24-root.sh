#!/usr/bin/env bash
# Builds (once) a Debian 13 "trixie" root file system holding Dovecot 2.4.1 (dovecot-core,
# dovecot-imapd), for the tests that run 2.4's doveadm/imap with chroot. Idempotent: when the
# root exists with the stamp of this recipe, it only prints its path (instant).
#
#   .ci/dovecot24-root.sh            # build if needed, print the root path on stdout
#
# Environment:
#   MAILDUMP_D24_ROOT    where the root lives (default /var/cache/maildump-ci/trixie-dovecot24)
#   MAILDUMP_D24_MIRROR  Debian mirror URL; default: the one this machine's apt sources use for
#                        its own release (deb822 *.sources or one-line *.list), never hard-coded
#
# Needs root and debootstrap. The root is built in a temporary sibling directory and renamed
# into place only when complete (stamp written last), so an interrupted run leaves nothing that
# looks complete; the next run removes such leftovers (unmounting anything debootstrap left
# mounted in them first). A lock serialises concurrent runs. The root is left unmounted:
# tests mount /proc only in private mount namespaces (tests/support/d24.sh).
set -euo pipefail

# Bump when the recipe changes: a root with another stamp is rebuilt.
RECIPE="maildump-d24 recipe 1: debootstrap minbase trixie + dovecot-core dovecot-imapd"
SUITE=trixie
PACKAGES=dovecot-core,dovecot-imapd
ROOT=${MAILDUMP_D24_ROOT:-/var/cache/maildump-ci/trixie-dovecot24}
ROOT=${ROOT%/}
STAMP_NAME=.maildump-d24-stamp

die() { echo "dovecot24-root: $*" >&2; exit 1; }
log() { echo "dovecot24-root: $*" >&2; }

is_complete() {
    [ -f "$1/$STAMP_NAME" ] && [ "$(head -n1 "$1/$STAMP_NAME")" = "$RECIPE" ]
}

# Fast path: nothing to do (no lock, no root needed to read it).
if is_complete "$ROOT"; then
    echo "$ROOT"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
command -v flock >/dev/null || die "flock missing (util-linux)"

# The Debian mirror this machine already uses for its own release: the first enabled `deb`
# entry whose suites include the host's codename (so not -security/-updates or third parties).
host_mirror() {
    local codename f
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || return 1
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: stanzas separated by blank lines; field names are case-insensitive;
        # continuation lines start with white space; '#' starts a comment line.
        awk -v want="$codename" '
            function flush() {
                if (!found && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") &&
                    tolower(enabled) != "no" && uris != "") { split(uris, u, " "); print u[1]; found = 1 }
                types = suites = uris = enabled = ""; last = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { sub(/^[ \t]+/, "")
                       if (last == "types") types = types " " $0
                       else if (last == "suites") suites = suites " " $0
                       else if (last == "uris") uris = uris " " $0
                       next }
            {
                key = tolower($0); sub(/:.*/, "", key)
                v = $0; sub(/^[^:]*:[ \t]*/, "", v); gsub(/[ \t]+/, " ", v)
                last = key
                if (key == "types") types = v
                else if (key == "suites") suites = v
                else if (key == "uris") uris = v
                else if (key == "enabled") enabled = v
            }
            END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # one-line: deb [options] URI suite components...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk -v want="$codename" '$1 == "deb" && $3 == want { print $2; exit }'
    done
}

# Removes a stale build directory: unmount whatever is mounted below it (deepest first), then
# delete without ever crossing into another file system.
remove_tree() {
    local dir=${1:?} mnt
    [ -e "$dir" ] || return 0
    dir=$(realpath -- "$dir")
    awk '{print $5}' /proc/self/mountinfo | sort -r | while read -r mnt; do
        case "$mnt" in "$dir"/*) umount "$mnt" 2>/dev/null || umount -l "$mnt" ;; esac
    done
    rm -rf --one-file-system -- "$dir"
}

parent=$(dirname -- "$ROOT")
name=$(basename -- "$ROOT")
mkdir -p -- "$parent"
exec 9>"$parent/.$name.lock"
flock 9
# Another run may have finished the build while we waited for the lock.
if is_complete "$ROOT"; then
    echo "$ROOT"
    exit 0
fi
for stale in "$parent/.$name.tmp."* "$parent/.$name.old."*; do
    [ -e "$stale" ] || continue
    log "removing leftover $stale"
    remove_tree "$stale"
done

mirror=${MAILDUMP_D24_MIRROR:-$(host_mirror | head -n1)}
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list(.d) for this release; \
set MAILDUMP_D24_MIRROR"
mirror=${mirror%/}

tmp=$(mktemp -d "$parent/.$name.tmp.XXXXXX")
boot_pid=
cleanup() {
    # Stop debootstrap (its own process group, with the dpkg runs it started) before removing
    # its target; its exit handler unmounts what it mounted, remove_tree catches the rest.
    if [ -n "$boot_pid" ] && kill -0 "$boot_pid" 2>/dev/null; then
        kill -TERM -- "-$boot_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 -- "-$boot_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$boot_pid" 2>/dev/null || true
    fi
    remove_tree "$tmp"
    rm -f -- "$tmp.log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

start=$(date +%s)
log "building $SUITE root with $PACKAGES from $mirror (a few minutes)"
# debootstrap runs in the background in its own process group so that a signal to this
# script is handled at once (bash runs traps only between foreground commands) and can stop
# debootstrap and everything it started. Its output goes to a log shown only if it fails.
setsid debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$mirror" \
    </dev/null >"$tmp.log" 2>&1 &
boot_pid=$!
if ! wait "$boot_pid"; then
    boot_pid=
    tail -n 40 "$tmp.log" >&2
    [ -f "$tmp/debootstrap/debootstrap.log" ] && tail -n 40 "$tmp/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi
boot_pid=
rm -f -- "$tmp.log"
# Downloaded .deb files are not needed any more.
rm -f -- "$tmp"/var/cache/apt/archives/*.deb

# Check what we got before calling it complete (dovecot --version needs no /proc).
version=$(chroot "$tmp" dovecot --version) || die "dovecot --version failed in the new root"
case "$version" in
2.4.*) ;;
*) die "expected Dovecot 2.4 in $SUITE, got: $version" ;;
esac
chroot "$tmp" doveadm help >/dev/null 2>&1 || chroot "$tmp" test -x /usr/bin/doveadm ||
    die "doveadm missing in the new root"
chroot "$tmp" test -x /usr/lib/dovecot/imap || die "dovecot-imapd missing in the new root"

# Scratch space for tests (stores must live inside the root so that host and chroot see the
# same files).
chmod 755 "$tmp"
mkdir -p -- "$tmp/srv/maildump-tests"
chmod 1777 "$tmp/srv/maildump-tests"

{
    echo "$RECIPE"
    echo "dovecot $version"
    echo "mirror $mirror"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start)) s"
} >"$tmp/$STAMP_NAME"

# Swap into place: the old root (other recipe) is moved aside first, then removed.
if [ -e "$ROOT" ]; then
    old=$(mktemp -u "$parent/.$name.old.XXXXXX")
    mv -- "$ROOT" "$old"
    remove_tree "$old"
fi
mv -- "$tmp" "$ROOT"
trap - EXIT
log "ready: $ROOT (Dovecot $version, $(($(date +%s) - start)) s)"
echo "$ROOT"
