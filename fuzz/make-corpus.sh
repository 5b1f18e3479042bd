#!/usr/bin/env bash
# Build the seed corpus of every fuzz target (fuzz/corpus/<target>/) from the format test
# vectors and the fixture stores. The result is checked in; run again after the vectors or
# fixtures change. Needs zstd, tar, python3 and a built maildump (cargo build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out="$here/corpus"
maildump="${MAILDUMP:-$repo/target/debug/maildump}"
[ -x "$maildump" ] || { echo "make-corpus.sh: build maildump first ($maildump)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "${tmp:?}"' EXIT

for t in archive_index archive_scan archive_json tar_header dovecot_index dbox_file uidlist \
    keywords subscriptions attributes mail_location headers mailbox_pattern mutf7 mime_split; do
    rm -rf "${out:?}/$t"
    mkdir -p "$out/$t"
done
# seed TARGET NAME: stdin becomes a seed file.
seed() { cat > "$out/$1/$2"; }

vectors="$repo/format-spec/vectors/v1"
for v in "$vectors"/*.mdump; do
    n=$(basename "$v" .mdump)
    cp "$v" "$out/archive_index/$n"
    cp "$v" "$out/archive_scan/$n"
    mkdir -p "$tmp/x/$n"
    zstd -qdc "$v" > "$tmp/$n.tar"
    tar -xf "$tmp/$n.tar" -C "$tmp/x/$n"
    # The first header blocks of the tar stream (manifest, users, mailboxes, messages).
    for k in 0 1 2 3; do
        python3 - "$tmp/$n.tar" "$k" > "$out/tar_header/$n.$k" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
k = int(sys.argv[2])
# k-th header: walk the members.
pos, i = 0, 0
while pos + 512 <= len(data):
    h = data[pos:pos + 512]
    if h == bytes(512):
        break
    size = int(h[124:136].strip(b'\0 ') or b'0', 8)
    if i == k:
        sys.stdout.buffer.write(data[pos:pos + 512 + min(size, 512)])
        break
    pos += 512 + (size + 511) // 512 * 512
    i += 1
PY
    done
    # JSON documents: first byte picks the type (see maildump::fuzzing::archive_json).
    { printf '\003'; cat "$tmp/x/$n/MAILDUMP.json"; } | seed archive_json "$n.manifest"
    find "$tmp/x/$n" -name user.json | sort | head -2 | while read -r f; do
        { printf '\002'; cat "$f"; } | seed archive_json "$n.user.$(basename "$(dirname "$f")")"
    done
    find "$tmp/x/$n" -name mailbox.json | sort | head -3 | while read -r f; do
        { printf '\001'; cat "$f"; } | seed archive_json "$n.mailbox.$(echo "$f" | md5sum | cut -c1-8)"
    done
    # The index directory: the zstd frame after the INDEX frame's 24-byte head.
    python3 - "$v" > "$tmp/$n.dir.zst" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
foot = d[-64:]
idx_off = struct.unpack('<Q', foot[16:24])[0]
dir_len = struct.unpack('<Q', d[idx_off + 16:idx_off + 24])[0]
sys.stdout.buffer.write(d[idx_off + 24:idx_off + 24 + dir_len])
PY
    { printf '\000'; zstd -qdc "$tmp/$n.dir.zst"; } | seed archive_json "$n.directory"
    # Message headers for RFC 2047 decoding.
    find "$tmp/x/$n" -name '*.eml' | sort | head -3 | while read -r f; do
        seed headers "$n.$(basename "$f")" < "$f"
    done
done

store="$repo/fixtures/store"
sdbox="$repo/fixtures/sdbox-store"
i=0
while read -r f; do i=$((i + 1)); seed uidlist "uidlist.$i" < "$f"; done \
    < <(find "$store" -name dovecot-uidlist | sort)
i=0
while read -r f; do i=$((i + 1)); seed keywords "keywords.$i" < "$f"; done \
    < <(find "$store" -name dovecot-keywords | sort)
i=0
while read -r f; do i=$((i + 1)); seed subscriptions "subscriptions.$i" < "$f"; done \
    < <(find "$store" "$sdbox" -name subscriptions | sort)
i=0
while read -r f; do i=$((i + 1)); seed attributes "attributes.$i" < "$f"; done \
    < <(find "$store" "$sdbox" -name dovecot-attributes | sort)
i=0
while read -r f; do i=$((i + 1)); seed dbox_file "u.$i" < "$f"; done \
    < <(find "$sdbox" -name 'u.*' | sort)
# dovecot_index: first byte 0 = log alone, 1 = index alone, 2 = index and log (u16 length
# of the index first). The indexes come from an sdbox restore of the SIS vector.
i=0
while read -r f; do i=$((i + 1)); { printf '\000'; cat "$f"; } | seed dovecot_index "log.$i"; done \
    < <(find "$sdbox" -name dovecot.index.log | sort)
"$maildump" restore "$vectors/sis.mdump" --location 'sdbox:~/sdbox' --home "$tmp/r/%u" --quiet
i=0
while read -r f; do
    i=$((i + 1))
    { printf '\001'; cat "$f"; } | seed dovecot_index "index.$i"
    log=$(find "$sdbox" -name dovecot.index.log | sort | head -1)
    python3 - "$f" "$log" > "$out/dovecot_index/both.$i" <<'PY'
import struct, sys
idx = open(sys.argv[1], 'rb').read()[:65535]
log = open(sys.argv[2], 'rb').read()
sys.stdout.buffer.write(b'\x02' + struct.pack('<H', len(idx)) + idx + log)
PY
done < <(find "$tmp/r" -name dovecot.index | sort)
find "$store" -path '*/cur/*' -type f | sort | head -3 | while read -r f; do
    seed headers "fixture.$(basename "$f" | cut -c1-24)" < "$f"
done
printf 'Subject: =?UTF-8?B?w5xuw68=?= =?ISO-8859-1?Q?caf=E9?=\nFrom: =?utf-8?q?A_B?= <a@b>\n\n' |
    seed headers rfc2047

# mime_split: messages with small base64 attachments (LF, CRLF, nested, rfc822), and the
# fixture's plain ones.
python3 - "$out/mime_split" <<'PY'
import base64, sys
out = sys.argv[1]
def b64(data, n=76, eol=b'\n'):
    t = base64.b64encode(data)
    return eol.join(t[i:i + n] for i in range(0, len(t), n))
att = bytes(range(256)) * 2
def mixed(eol, parts):
    m = (b'Subject: x\nContent-Type: multipart/mixed; boundary="b1"\n\npre\n--b1\n'
         b'Content-Type: text/plain\n\nhi\n')
    for p in parts:
        m += b'--b1\nContent-Transfer-Encoding: base64\n\n' + p + b'\n'
    return (m + b'--b1--\n').replace(b'\n', eol)
open(out + '/lf', 'wb').write(mixed(b'\n', [b64(att), b64(att[:100], 64)]))
open(out + '/crlf', 'wb').write(mixed(b'\r\n', [b64(att)]))
inner = (b'Content-Type: multipart/alternative; boundary=in\n\n--in\nContent-Type: image/png\n'
         b'Content-Transfer-Encoding: base64\n\n' + b64(att, 72) + b'\n--in--\n')
open(out + '/nested', 'wb').write(
    b'Content-Type: multipart/mixed; boundary=out\n\n--out\n' + inner +
    b'--out\nContent-Type: message/rfc822\n\nContent-Transfer-Encoding: base64\n\n' +
    b64(att) + b'\n--out--\n')
open(out + '/single', 'wb').write(b'Content-Transfer-Encoding: base64\n\n' + b64(att))
PY
find "$store" -path '*/cur/*' -type f | sort | head -2 | while read -r f; do
    seed mime_split "fixture.$(basename "$f" | cut -c1-24)" < "$f"
done

# mail_location: location, home template, user (three lines).
printf 'maildir:~/Maildir:LAYOUT=fs:UTF-8\n/srv/mail/%%d/%%n\nbob@example.org' | seed mail_location fs
printf 'mdbox:~/mdbox:ALT=/alt/%%u\n/srv/%%Lu\nAlice' | seed mail_location mdbox
printf 'sdbox:/var/mail/%%d/%%n/sdbox\n\nx@..' | seed mail_location hostile
printf 'maildir:/srv/.%%d./%%n\n\nbob' | seed mail_location dots
# mailbox_pattern: pattern NUL name.
printf 'Work/*\000Work/Sub/Deep' | seed mailbox_pattern star
printf '%%/%%\000INBOX/x' | seed mailbox_pattern percent
printf 'alice\tINBOX\t3\tx\n;bob\tINBOX\t4\n' | seed mailbox_pattern restore-list
printf '1:5,9,20:*' | seed mailbox_pattern seqset
# mUTF-7 names (the fixture's folder names and a few more).
printf '&ANw-n&AO8- Box' | seed mutf7 fixture
printf 'Entw&APw-rfe' | seed mutf7 entwuerfe
printf '&-&2D3eAA-' | seed mutf7 amp-emoji
echo "make-corpus.sh: $(find "$out" -type f | wc -l) seeds in $out"
