#!/usr/bin/env python3
"""Seeded post-processor for a gen_maildir.py corpus: more attachments shared between users.

gen_maildir.py draws ~20% of its attachments from a pool shared between users. This script
raises that share the way a real mail store gets it: a message with a base64 attachment
(a newsletter, a contract, a photo) is delivered to several users. It picks messages that
carry an attachment, in a seeded random order, and delivers a copy of each to 1..MAX_COPIES
other users' INBOX until the copies add GROW percent to the corpus's message bytes.

A copy is what a mail server's local delivery writes for another recipient of the same
message: the same bytes but for the trace headers at the top (its own `Delivered-To` and a
`Received` line with its own LMTP id), so whole messages differ while every attachment part
is byte-identical to the original's. Each copy gets a new Maildir file name (`S=` and `W=`
sizes of its own) in INBOX/cur/ and the next UID of the INBOX's dovecot-uidlist.

Same corpus, --seed, --grow and --max-copies => byte-identical files, names and mtimes.

  share_attachments.py --root /tmp/corpus-shared --seed 1 --grow 50 --max-copies 5

Prints one JSON line: sources, copies, added bytes, messages and bytes before.
"""
import argparse
import json
import os
import random
import sys
import time

T_STAMP = 1764547200 + 86400  # gen_maildir.py's T_END plus a day: mtime of changed dirs
MIN_SIZE = 60_000  # gen_maildir.py's attachments are >= 50 KB, >= 66 KB in base64
HOSTS = ["mx1.example.net", "mx2.example.net"]


def message_files(root, user):
    """(relative path, size) of every message file of a user, sorted."""
    out = []
    md = os.path.join(root, user, "Maildir")
    for dp, dns, fns in os.walk(md):
        dns.sort()
        if os.path.basename(dp) not in ("cur", "new"):
            continue
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            out.append((os.path.relpath(p, root), os.path.getsize(p)))
    return out


def has_attachment(path):
    with open(path, "rb") as fh:
        data = fh.read()
    return b"Content-Disposition: attachment" in data and \
        b"Content-Transfer-Encoding: base64" in data


def retrace(data, user, r, t):
    """The message as delivered to user: its own Delivered-To and a new Received line
    on top; the rest (all MIME parts) unchanged."""
    head, sep, rest = data.partition(b"\n\n")
    lines = head.split(b"\n")
    lines = [b"Delivered-To: " + user.encode() + b"@example.net"
             if ln.startswith(b"Delivered-To: ") else ln for ln in lines]
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
    rcv = (f"Received: from {r.choice(HOSTS)}\n\tby imap01 with LMTP id {r.getrandbits(64):016x}\n"
           f"\tfor <{user}@example.net>; {date}").encode()
    # after Return-Path, as an MTA prepends it
    at = 1 if lines and lines[0].startswith(b"Return-Path: ") else 0
    lines.insert(at, rcv)
    return b"\n".join(lines) + sep + rest


def read_uidlist(path):
    with open(path, "rb") as fh:
        header = fh.readline()
        body = fh.read()
    fields = header.split()
    nextuid = next(int(f[1:]) for f in fields if f.startswith(b"N"))
    return fields, nextuid, body


def write_uidlist(path, fields, nextuid, body, added):
    fields = [b"N%d" % nextuid if f.startswith(b"N") else f for f in fields]
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(b" ".join(fields) + b"\n" + body)
        for uid, base in added:
            fh.write(b"%d :%s\n" % (uid, base.encode()))
    os.rename(tmp, path)
    os.utime(path, (T_STAMP, T_STAMP))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="corpus root (modified in place)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grow", type=float, default=50.0, metavar="PCT",
                    help="copies add PCT%% to the corpus's message bytes (default 50)")
    ap.add_argument("--max-copies", type=int, default=5, metavar="N",
                    help="each picked message goes to 1..N other users (default 5)")
    a = ap.parse_args()
    if a.grow <= 0 or a.max_copies < 1:
        sys.exit("share_attachments.py: --grow must be > 0 and --max-copies >= 1")
    users = sorted(u for u in os.listdir(a.root)
                   if os.path.isdir(os.path.join(a.root, u, "Maildir")))
    if len(users) < 2:
        sys.exit(f"share_attachments.py: {a.root}: fewer than two users")
    files = {u: message_files(a.root, u) for u in users}
    before = sum(s for fl in files.values() for _, s in fl)
    nmsgs = sum(len(fl) for fl in files.values())
    cands = [(u, rel) for u in users for rel, s in files[u]
             if s >= MIN_SIZE and has_attachment(os.path.join(a.root, rel))]
    if not cands:
        sys.exit(f"share_attachments.py: {a.root}: no message with a base64 attachment")
    r = random.Random(f"{a.seed}-share")
    r.shuffle(cands)
    budget = before * a.grow / 100.0
    added = {u: [] for u in users}  # user -> [(base name, bytes, mtime)]
    taken = {u: {os.path.basename(rel).split(":", 1)[0] for rel, _ in files[u]} for u in users}
    grown = sources = copies = 0
    for src_user, rel in cands:
        if grown >= budget:
            break
        path = os.path.join(a.root, rel)
        with open(path, "rb") as fh:
            data = fh.read()
        t0 = int(os.stat(path).st_mtime)
        others = [u for u in users if u != src_user]
        sources += 1
        for u in r.sample(others, min(len(others), r.randint(1, a.max_copies))):
            t = t0 + r.randint(0, 120)
            msg = retrace(data, u, r, t)
            vsize = len(msg) + msg.count(b"\n")
            while True:
                base = f"{t}.M{r.randrange(1000000)}P{r.randint(1000, 65000)}." \
                       f"{r.choice(HOSTS)},S={len(msg)},W={vsize}"
                if base not in taken[u]:
                    break
            taken[u].add(base)
            added[u].append((base, msg, t))
            grown += len(msg)
            copies += 1
    for u in users:
        if not added[u]:
            continue
        md = os.path.join(a.root, u, "Maildir")
        ul = os.path.join(md, "dovecot-uidlist")
        fields, nextuid, body = read_uidlist(ul)
        entries = []
        for base, msg, t in added[u]:
            fn = os.path.join(md, "cur", base + ":2," + ("S" if r.random() < 0.5 else ""))
            with open(fn, "wb") as fh:
                fh.write(msg)
            os.utime(fn, (t, t))
            entries.append((nextuid, base))
            nextuid += 1
        write_uidlist(ul, fields, nextuid, body, entries)
        for d in (os.path.join(md, "cur"), md):
            os.utime(d, (T_STAMP, T_STAMP))
    print(json.dumps(dict(seed=a.seed, grow=a.grow, max_copies=a.max_copies,
                          messages_before=nmsgs, bytes_before=before,
                          candidates=len(cands), sources=sources, copies=copies,
                          added_bytes=grown)))


if __name__ == "__main__":
    main()
