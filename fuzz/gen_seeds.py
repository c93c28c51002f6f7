#!/usr/bin/env python3
"""Writes the small seed corpora of the webdav, sftp and blob fuzz targets (fuzz/corpus/*/seed-*).

Run from anywhere: python3 fuzz/gen_seeds.py. The seeds are committed; this script documents how
they were made and regenerates them after a format change of a target's input.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
M = "2026-001 Smith v Jones"
CD = M + "/Client Documents"


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def url(p):
    from urllib.parse import quote
    return quote(p)


# ---- WebDAV: "METHOD PATH\nHeader: v\n\nbody"
PROPFIND = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:"><D:prop>'
            '<D:getcontentlength/><D:getlastmodified/><D:resourcetype/><D:getetag/>'
            '</D:prop></D:propfind>')
LOCK = ('<?xml version="1.0" encoding="utf-8"?>\n<D:lockinfo xmlns:D="DAV:"><D:lockscope>'
        '<D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>'
        '<D:href>me</D:href></D:owner></D:lockinfo>')
PROPPATCH = ('<?xml version="1.0"?>\n<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z">'
             '<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set>'
             '<D:remove><D:prop><Z:size/></D:prop></D:remove></D:propertyupdate>')
BILLION = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
           '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
           '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
           '<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol3;</D:displayname></D:prop></D:propfind>')
webdav = {
    "options": "OPTIONS /dav/\n\n",
    "propfind-root": "PROPFIND /dav/\nDepth: 1\nContent-Type: application/xml\n\n" + PROPFIND,
    "propfind-allprop": "PROPFIND %s/\nDepth: infinity\n\n" % url("/dav/" + M),
    "propfind-folder": "PROPFIND %s/\nDepth: 1\n\n" % url("/dav/" + CD),
    "get": "GET %s\nRange: bytes=3-10\n\n" % url("/dav/" + CD + "/letter.txt"),
    "head": "HEAD %s\n\n" % url("/dav/" + CD + "/letter.txt"),
    "put": "PUT %s\nContent-Type: text/plain\nX-OC-Mtime: 1700000000\n\nhello world" % url("/dav/" + CD + "/new.txt"),
    "put-ifmatch": "PUT %s\nIf-Match: \"x\"\n\nabc" % url("/dav/" + CD + "/letter.txt"),
    "mkcol": "MKCOL %s\n\n" % url("/dav/" + CD + "/Sub Folder"),
    "delete": "DELETE %s\n\n" % url("/dav/" + CD + "/new.txt"),
    "copy": "COPY %s\nDestination: http://localhost%s\nOverwrite: F\n\n" % (
        url("/dav/" + CD + "/letter.txt"), url("/dav/" + CD + "/copy.txt")),
    "move": "MOVE %s\nDestination: %s\nOverwrite: T\n\n" % (
        url("/dav/" + CD + "/copy.txt"), url("/dav/" + M + "/Client Documents/Tax Returns/moved.txt")),
    "lock": "LOCK %s\nTimeout: Second-60\nDepth: 0\n\n%s" % (url("/dav/" + CD + "/letter.txt"), LOCK),
    "unlock": "UNLOCK %s\nLock-Token: <opaquelocktoken:1234>\n\n" % url("/dav/" + CD + "/letter.txt"),
    "proppatch": "PROPPATCH %s\n\n%s" % (url("/dav/" + CD + "/letter.txt"), PROPPATCH),
    "entities": "PROPFIND /dav/\nDepth: 0\n\n" + BILLION,
    "bad-xml": "PROPFIND /dav/\nDepth: 1\n\n<D:propfind xmlns:D=\"DAV:\"><D:prop><D:getetag></D:propfind>",
    "anon": "!PROPFIND /dav/\nDepth: 1\n\n",
    "dotdot": "GET /dav/../../etc/passwd\n\n",
    "internal": "PROPFIND %s\nDepth: 1\n\n" % url("/dav/" + M + "/Internal"),
}
for k, v in webdav.items():
    put("webdav", k, v)


# ---- SFTP: byte 0 odd = u16-framed packets
def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">I", len(x)) + x


def attrs(size=None, perms=None, mtime=None):
    flags, body = 0, b""
    if size is not None:
        flags |= 1
        body += struct.pack(">Q", size)
    if perms is not None:
        flags |= 4
        body += struct.pack(">I", perms)
    if mtime is not None:
        flags |= 8
        body += struct.pack(">II", mtime, mtime)
    return struct.pack(">I", flags) + body


def pkt(t, rid, body):
    return bytes([t]) + struct.pack(">I", rid) + body


def u16(*pkts):
    out = b"\x01"
    for p in pkts:
        out += struct.pack(">H", len(p)) + p
    return out


def raw(*pkts):
    out = b"\x00"
    for p in pkts:
        out += struct.pack(">I", len(p)) + p
    return out


READ, WRITE, CREAT, TRUNC, EXCL = 1, 2, 8, 0x10, 0x20
f = "/" + CD + "/up.txt"
put("sftp", "realpath", u16(pkt(16, 1, s(".")), pkt(16, 2, s("/../" + M + "/./x/.."))))
put("sftp", "listdir", u16(pkt(11, 1, s("/" + CD)), pkt(12, 2, s("h1")), pkt(12, 3, s("h1")), pkt(4, 4, s("h1"))))
put("sftp", "stat", u16(pkt(17, 1, s("/" + M)), pkt(7, 2, s("/" + CD + "/letter.txt")), pkt(17, 3, s("/nope"))))
put("sftp", "upload", u16(pkt(3, 1, s(f) + struct.pack(">I", WRITE | CREAT | TRUNC) + attrs()),
                          pkt(6, 2, s("h1") + struct.pack(">Q", 0) + s(b"hello")),
                          pkt(6, 3, s("h1") + struct.pack(">Q", 100) + s(b"gap")),
                          pkt(8, 4, s("h1")),
                          pkt(10, 5, s("h1") + attrs(size=50, mtime=1700000000)),
                          pkt(5, 6, s("h1") + struct.pack(">QI", 0, 64)),
                          pkt(4, 7, s("h1"))))
put("sftp", "download", u16(pkt(3, 1, s("/" + CD + "/letter.txt") + struct.pack(">I", READ) + attrs()),
                            pkt(5, 2, s("h1") + struct.pack(">QI", 0, 32768)),
                            pkt(5, 3, s("h1") + struct.pack(">QI", 99990, 0xFFFFFFFF)),
                            pkt(8, 4, s("h1")), pkt(4, 5, s("h1"))))
put("sftp", "mkdir-rename-remove", u16(pkt(14, 1, s("/" + CD + "/Dir") + attrs()),
                                       pkt(18, 2, s("/" + CD + "/letter.txt") + s("/" + CD + "/Dir/l.txt")),
                                       pkt(13, 3, s("/" + CD + "/Dir/l.txt")),
                                       pkt(15, 4, s("/" + CD + "/Dir"))))
put("sftp", "extended", u16(pkt(200, 1, s("posix-rename@openssh.com") + s("/" + CD + "/a") + s("/" + CD + "/b")),
                            pkt(200, 2, s("statvfs@openssh.com") + s("/")),
                            pkt(200, 3, s("fsync@openssh.com") + s("h1")),
                            pkt(200, 4, s("nope@example.com"))))
put("sftp", "setstat-symlink", u16(pkt(9, 1, s("/" + CD + "/letter.txt") + attrs(mtime=5)),
                                   pkt(20, 2, s("/a") + s("/b")), pkt(19, 3, s("/a"))))
put("sftp", "lying-lengths", u16(pkt(17, 1, struct.pack(">I", 0xFFFFFFF0) + b"abc"),
                                 pkt(3, 2, struct.pack(">I", 3) + b"/a"),
                                 pkt(6, 3, s("h9") + struct.pack(">Q", 2**63) + struct.pack(">I", 1 << 30))))
put("sftp", "raw-excl", raw(pkt(3, 1, s(f) + struct.pack(">I", WRITE | CREAT | EXCL) + attrs()),
                            pkt(4, 2, s("h1"))))
put("sftp", "raw-oversized", b"\x00" + struct.pack(">I", 300000) + b"\x11" * 64)

# ---- blob: byte 0 = mode, then 8 read bytes, then 4-byte edits
put("blob", "clean", bytes([1]) + bytes([0, 10, 60, 20, 100, 255, 155, 1]))
put("blob", "flip", bytes([1]) + bytes(8) + bytes([0, 0x10, 0x00, 0x01]))
put("blob", "truncate", bytes([1]) + bytes(8) + bytes([3, 0x28, 0x00, 0]))
put("blob", "extend", bytes([1]) + bytes(8) + bytes([4, 0, 20, 7]))
put("blob", "swap", bytes([5]) + bytes(8) + bytes([5, 0, 1, 0]))
put("blob", "dup", bytes([5]) + bytes(8) + bytes([6, 2, 0, 0]))
put("blob", "ref-len", bytes([1]) + bytes(8) + bytes([7, 0, 1, 3]))
put("blob", "ref-key", bytes([1]) + bytes(8) + bytes([8, 0, 5, 1]))
put("blob", "ref-hash", bytes([5]) + bytes(8) + bytes([9, 0, 5, 1]))
put("blob", "replace", bytes([0]) + b"\x00" * 10048)

# ---- provision: byte 0 even = portal file, odd = server config
ROOT = os.path.dirname(HERE)
with open(os.path.join(ROOT, "examples", "portal.toml")) as f:
    portal = f.read()
put("provision", "portal-example", b"\x00" + portal.encode())
nopass = "\n".join(l for l in portal.splitlines() if "password" not in l and "login =" not in l)
put("provision", "portal-no-passwords", b"\x00" + nopass.encode())
put("provision", "portal-minimal", b"\x00" + b'[firm]\nparticipant_types = ["Client"]\n[[matter_types]]\nname = "General"\nfolders = ["Client Documents", "Internal"]\n[matter_types.portal."Client Documents"]\nClient = ["list", "read", "create"]\n')
put("provision", "portal-bad", b"\x00" + b'[firm]\nparticipant_types = "Client"\n[[matters]]\nnumber = 7\n')
with open(os.path.join(ROOT, "src", "config.rs")) as f:
    lines = f.read().splitlines()
conf, inside = [], False
for l in lines:
    if l.startswith("//! ```toml"):
        inside = True
        continue
    if inside and l.startswith("//! ```"):
        break
    if inside:
        conf.append(l[4:] if l.startswith("//! ") else "")
put("provision", "config-example", b"\x01" + "\n".join(conf).encode())
put("provision", "config-empty", b"\x01")
put("provision", "config-unknown-key", b"\x01" + b'[webdav]\nlistn = "127.0.0.1:1"\n')
