#!/usr/bin/env bash
# Checks every pattern tests/support/dovecot24.md documents, against the real Dovecot 2.4 root
# (built by .ci/dovecot24-root.sh; a missing root fails loudly):
#   - doveadm 2.4 via chroot on stores under $ROOT/srv, for maildir, sdbox, mdbox with
#     external attachments: import, save, mailbox status, fetch, flags, expunge, purge,
#     force-resync, mailbox metadata; files owned by the mail uid; 2.4's attachment layout
#   - parallel doveadm calls with separate scratch dirs and configs do not interfere
#   - a 2.4 imap server inside the root on a loopback port, used by Python's imaplib on the
#     host, stopped cleanly (no process, no listener, no mount left)
#
#   tests/support/d24-selftest.sh [WORKERS [SAVES]]      (defaults: 6 workers x 20 saves)
#
# Exits non-zero on the first failed check; cleans up its scratch dir and server on any exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
D24=$here/d24.sh
WORKERS=${1:-6}
SAVES=${2:-20}
MAIL_ID=5000

ROOT=$("$D24" root)
"$D24" check >/dev/null
scratch=$(mktemp -d "$ROOT/srv/maildump-tests/selftest.XXXXXX")
# mktemp makes it 0700: the mail uid must be able to traverse it.
chmod 755 "$scratch"
server_conf=
cleanup() {
    if [ -n "$server_conf" ]; then "$D24" stop "$server_conf" >/dev/null 2>&1 || true; fi
    rm -rf --one-file-system -- "${scratch:?}"
}
trap cleanup EXIT

checks=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); }
expect_eq() { # expect_eq WHAT EXPECTED ACTUAL
    [ "$2" = "$3" ] || fail "$1: expected [$2], got [$3]"
    ok
}

# write_conf DIR(host) FORMAT [extra lines on stdin]: a doveadm-only 2.4 config in DIR.
write_conf() {
    local dir=$1 fmt=$2 in
    in=$("$D24" inner "$dir")
    mkdir -p "$dir/run" "$dir/state" "$dir/home"
    {
        cat <<EOF
dovecot_config_version = 2.4.1
dovecot_storage_version = 2.4.1
base_dir = $in/run
state_dir = $in/state
log_path = /dev/stderr
ssl = no
mail_driver = $fmt
mail_path = ~/$fmt
mail_home = $in/home/%{user}
mail_uid = $MAIL_ID
mail_gid = $MAIL_ID
first_valid_uid = 500
first_valid_gid = 500
namespace inbox {
  inbox = yes
  separator = /
}
mail_attribute {
  dict file {
    path = %{home}/dovecot-attributes
  }
}
EOF
        cat
    } >"$dir/dovecot.conf"
    chown -R "$MAIL_ID:$MAIL_ID" "$dir"
}

# da DIR(host) USER ARGS...: doveadm 2.4 for USER with DIR's config (ARGS after the command
# name must include --no-userdb-lookup).
da() {
    local dir=$1 user=$2 in
    shift 2
    in=$("$D24" inner "$dir")
    USER=$user "$D24" doveadm -c "$in/dovecot.conf" "$@"
}

message() { # message N SUBJECT
    printf 'From: test@example.org\nTo: alice@example.org\nSubject: %s\nMessage-ID: <%s@selftest>\n\nbody %s\n' \
        "$2" "$1" "$1"
}

attachment_message() {
    python3 - <<'EOF'
import base64
att = base64.encodebytes(bytes(range(256)) * 16).decode()
print("From: a@example.org\nTo: alice@example.org\nSubject: att\nMessage-ID: <att@selftest>\n"
      "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\n"
      "Content-Type: text/plain\n\nSee attached.\n--b1\n"
      "Content-Type: application/octet-stream; name=\"a.bin\"\n"
      "Content-Transfer-Encoding: base64\n"
      "Content-Disposition: attachment; filename=\"a.bin\"\n\n" + att + "--b1--")
EOF
}

# --- 1. every operation, each format ------------------------------------------------------
formats() {
    local fmt dir src out
    for fmt in maildir sdbox mdbox; do
        dir=$scratch/$fmt
        if [ "$fmt" = maildir ]; then
            write_conf "$dir" "$fmt" </dev/null
        else
            write_conf "$dir" "$fmt" <<'EOF'
mail_ext_attachment {
  path = ~/attachments
  min_size = 1k
  fs sis {
  }
  fs posix {
  }
}
EOF
        fi
        # A Maildir++ import source written on the host (received date = mtime, GUID = base).
        src=$dir/src/Maildir
        mkdir -p "$src"/{cur,new,tmp} "$src"/.Work/{cur,new,tmp}
        message 1 one >"$src/cur/1500000000.M1P1.src:2,S"
        message 2 two >"$src/cur/1500000100.M2P2.src:2,F"
        message 3 three >"$src/.Work/cur/1500000200.M3P3.src:2,FS"
        touch -d @1500000000 "$src/cur/1500000000.M1P1.src:2,S"
        touch -d @1500000100 "$src/cur/1500000100.M2P2.src:2,F"
        touch -d @1500000200 "$src/.Work/cur/1500000200.M3P3.src:2,FS"
        chown -R "$MAIL_ID:$MAIL_ID" "$dir/src"

        da "$dir" alice import --no-userdb-lookup "maildir:$("$D24" inner "$src")" "" all
        attachment_message | da "$dir" alice save --no-userdb-lookup -m INBOX
        out=$(da "$dir" alice -f tab mailbox status --no-userdb-lookup 'messages uidnext' INBOX)
        expect_eq "$fmt status INBOX" "$(printf 'mailbox\tmessages\tuidnext\nINBOX\t3\t4')" "$out"
        out=$(da "$dir" alice -f tab mailbox status --no-userdb-lookup 'messages uidnext' Work)
        expect_eq "$fmt status Work" "$(printf 'mailbox\tmessages\tuidnext\nWork\t1\t2')" "$out"
        out=$(da "$dir" alice -f tab fetch --no-userdb-lookup 'mailbox uid guid flags date.received' \
            mailbox INBOX uid 1:2)
        expect_eq "$fmt fetch" "$(printf '%s\n%s\n%s' 'mailbox	uid	guid	flags	date.received' \
            'INBOX	1	1500000000.M1P1.src	\Seen \Recent	2017-07-14 02:40:00' \
            'INBOX	2	1500000100.M2P2.src	\Flagged \Recent	2017-07-14 02:41:40')" "$out"
        # shellcheck disable=SC2016 # $Label1 is a keyword, not a shell variable
        da "$dir" alice flags add --no-userdb-lookup '\Answered $Label1' mailbox INBOX uid 1
        da "$dir" alice expunge --no-userdb-lookup mailbox INBOX uid 2
        da "$dir" alice purge --no-userdb-lookup
        da "$dir" alice force-resync --no-userdb-lookup '*' 2>/dev/null
        da "$dir" alice mailbox metadata set --no-userdb-lookup INBOX /private/comment "c $fmt"
        da "$dir" alice mailbox metadata set --no-userdb-lookup -s '' \
            /shared/vendor/vendor.dovecot/srv "s $fmt"
        out=$(da "$dir" alice -f tab fetch --no-userdb-lookup 'uid flags' mailbox INBOX all)
        # shellcheck disable=SC2016 # $Label1 is a keyword, not a shell variable
        expect_eq "$fmt after expunge/purge/resync" \
            "$(printf 'uid\tflags\n1\t\\Answered \\Seen \\Recent $Label1\n3\t\\Recent')" "$out"
        out=$(da "$dir" alice -f tab mailbox metadata get --no-userdb-lookup INBOX /private/comment)
        expect_eq "$fmt metadata" "$(printf 'value\nc %s' "$fmt")" "$out"
        out=$(da "$dir" alice -f tab mailbox metadata get --no-userdb-lookup -s '' \
            /shared/vendor/vendor.dovecot/srv)
        expect_eq "$fmt server metadata" "$(printf 'value\ns %s' "$fmt")" "$out"

        # Everything 2.4 wrote is owned by the mail uid, seen as such from the host.
        out=$(find "$dir/home" \( ! -uid "$MAIL_ID" -o ! -gid "$MAIL_ID" \) -printf '%p ')
        expect_eq "$fmt ownership" "" "$out"
        if [ "$fmt" != maildir ]; then
            # 2.4's external attachments: xx/yy/<sha1>-<guid>[...], and no hashes/ directory.
            out=$(find "$dir/home/alice/attachments" -type f | wc -l)
            expect_eq "$fmt attachment files" 1 "$out"
            out=$(find "$dir/home/alice/attachments" -name hashes | wc -l)
            expect_eq "$fmt no hashes/" 0 "$out"
        fi
    done
}

# --- 2. parallel doveadm calls, separate scratch dirs and configs ----------------------------
worker() { # worker N: SAVES saves, then checks its own store only
    local n=$1 fmt dir i out
    fmt=$(echo "maildir sdbox mdbox" | cut -d' ' -f$((n % 3 + 1)))
    dir=$scratch/par$n
    write_conf "$dir" "$fmt" </dev/null
    for i in $(seq 1 "$SAVES"); do
        message "$n.$i" "worker $n message $i" | da "$dir" "u$n" save --no-userdb-lookup -m INBOX
        da "$dir" "u$n" flags add --no-userdb-lookup '\Seen' mailbox INBOX uid "$i"
    done
    out=$(da "$dir" "u$n" -f tab mailbox status --no-userdb-lookup 'messages unseen uidnext' INBOX)
    # doveadm prints the fields in its own order (messages uidnext unseen), not the asked one.
    [ "$out" = "$(printf 'mailbox\tmessages\tuidnext\tunseen\nINBOX\t%s\t%s\t0' "$SAVES" $((SAVES + 1)))" ] ||
        { echo "worker $n ($fmt): unexpected status: $out" >&2; return 1; }
    out=$(da "$dir" "u$n" fetch --no-userdb-lookup 'hdr.subject' mailbox INBOX all |
        grep -c "worker $n message") || true
    [ "$out" = "$SAVES" ] || { echo "worker $n: $out of $SAVES own subjects" >&2; return 1; }
}

parallel() {
    local n pids=() failed=0
    for n in $(seq 1 "$WORKERS"); do
        worker "$n" &
        pids+=($!)
    done
    for n in "${pids[@]}"; do wait "$n" || failed=$((failed + 1)); done
    expect_eq "parallel workers failed" 0 "$failed"
}

# --- 3. imap server inside the root, imaplib client on the host -----------------------------
imap() {
    local dir=$scratch/imap in port pid out
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    in=$("$D24" inner "$dir")
    write_conf "$dir" maildir <<EOF
protocols = imap
listen = 127.0.0.1
auth_allow_cleartext = yes
auth_mechanisms = plain
passdb static {
  password = secret
}
userdb static {
  fields {
    uid = $MAIL_ID
    gid = $MAIL_ID
    home = $in/home/%{user}
  }
}
service imap-login {
  inet_listener imap {
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
    sed -i "s|^log_path = .*|log_path = $in/dovecot.log|" "$dir/dovecot.conf"
    server_conf=$in/dovecot.conf
    pid=$("$D24" serve "$server_conf")
    out=$(PORT=$port python3 - <<'EOF'
import imaplib, os
c = imaplib.IMAP4("127.0.0.1", int(os.environ["PORT"]), timeout=10)
c.login("alice", "secret")
typ, data = c.append("INBOX", r"(\Flagged)", None, b"From: a@b\r\nSubject: via imap\r\n\r\nhi\r\n")
assert typ == "OK", data
c.select("INBOX")
typ, data = c.uid("FETCH", "1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert typ == "OK", data
print(data[0][1].decode().strip())
c.logout()
EOF
)
    expect_eq "imap fetch" "Subject: via imap" "$out"
    # doveadm on the same store while the server runs.
    out=$(da "$dir" alice -f tab fetch --no-userdb-lookup 'uid flags' mailbox INBOX all)
    expect_eq "doveadm sees the imap append" "$(printf 'uid\tflags\n1\t\\Flagged')" "$out"
    "$D24" stop "$server_conf"
    server_conf=
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        fail "port $port still accepts connections after stop"
    fi
    ok
    kill -0 -- "-$pid" 2>/dev/null && fail "processes of master $pid left after stop"
    ok
    out=$(awk -v r="$ROOT/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo)
    expect_eq "mounts under the root after stop" "" "$out"
}

formats
parallel
imap
echo "d24-selftest: $checks passed, 0 failed (Dovecot $("$D24" check), $WORKERS workers x $SAVES saves)"
