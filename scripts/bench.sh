#!/usr/bin/env bash
# Throughput benchmark (not a test): nuage against Apache mod_dav on 127.0.0.1, each figure
# beside its limit measured in the same run (curl, the local disk), and beside
# `rclone mount --vfs-cache-mode full` and davfs2 (`mount -t davfs`) when they are installed.
# A workload a tool cannot do shows "failed" (davfs2 1.6.1 on this Linux 6.18 cannot list a
# folder: `ls` gets EINVAL).
#   bash scripts/bench.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB="${1:-1024}"
NFILES=5000
for c in apache2 htpasswd curl python3 fusermount3; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || { echo "missing $c: run scripts/test.sh first" >&2; exit 1; }
done
cargo build --release --locked --quiet
NUAGE="$PWD/target/release/nuage"

W=$(mktemp -d /tmp/nuage-bench.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/data/many" "$W/run" "$W/mnt" "$W/rmnt" "$W/vmnt" "$W/dmnt"
APID=""; NPID=""; RPID=""; PXPID=""; DPID=""; VPIDS=()
cleanup() {
  for mp in "$W/mnt" "$W/rmnt" "$W/vmnt" "$W/dmnt"; do
    grep -q " $mp " /proc/mounts && umount -l "$mp" 2>/dev/null || true
  done
  for p in "${VPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf /var/cache/davfs2/127.0.0.1+"$(echo "${W#/}" | tr / -)"-*
  [ -n "$NPID" ] && kill "$NPID" 2>/dev/null || true
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null || true
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null || true
  [ -n "$PXPID" ] && kill "$PXPID" 2>/dev/null || true
  [ -n "$APID" ] && kill "$APID" 2>/dev/null || true
  sleep 0.5
  rm -rf "$W"
}
trap cleanup EXIT

PASS=bench-password
printf '%s' "$PASS" | htpasswd -ci "$W/htpasswd" bench >/dev/null 2>&1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
M=/usr/lib/apache2/modules
cat > "$W/httpd.conf" <<CONF
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
PidFile $W/run/httpd.pid
DefaultRuntimeDir $W/run
Mutex file:$W/run default
ErrorLog $W/error.log
LogFormat "%h %u \"%r\" %>s %O" dav
CustomLog $W/access.log dav
User www-data
Group www-data
KeepAliveTimeout 30
MaxKeepAliveRequests 0
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule authz_user_module $M/mod_authz_user.so
LoadModule authn_core_module $M/mod_authn_core.so
LoadModule authn_file_module $M/mod_authn_file.so
LoadModule auth_basic_module $M/mod_auth_basic.so
LoadModule alias_module $M/mod_alias.so
LoadModule dav_module $M/mod_dav.so
LoadModule dav_fs_module $M/mod_dav_fs.so
DavLockDB $W/run/davlock
Alias /dav $W/data
<Directory $W/data>
  Dav On
  AuthType Basic
  AuthName bench
  AuthUserFile $W/htpasswd
  Require valid-user
</Directory>
CONF
echo "preparing ${SIZE_MIB} MiB files and $NFILES small files..." >&2
head -c "${SIZE_MIB}M" /dev/urandom > "$W/data/big.bin"
head -c "${SIZE_MIB}M" /dev/urandom > "$W/data/big2.bin"
python3 - "$W/data/many" "$NFILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"file-{i:05d}.txt"), "w") as f:
        f.write("x" * (i % 100))
PY
chown -R www-data:www-data "$W/data" "$W/run"
/usr/sbin/apache2 -f "$W/httpd.conf" -DFOREGROUND & APID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/dav/"
printf '%s\n' "$PASS" > "$W/pw"; chmod 600 "$W/pw"
printf 'user = "bench:%s"\n' "$PASS" > "$W/curlrc"; chmod 600 "$W/curlrc"
# Every small file, one after the other on one connection (the limit of reading them all).
cp "$W/curlrc" "$W/many.curl"
for i in $(seq 0 $((NFILES - 1))); do
  printf 'url = "%smany/file-%05d.txt"\noutput = "/dev/null"\n' "$URL" "$i"
done >> "$W/many.curl"

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.3f}')"; }
mibs() { python3 -c "print(f'{$SIZE_MIB/($2-$1):.0f}')"; }
served() { awk '/"GET /{s+=$NF} END{printf "%.0f\n", s}' "$W/access.log"; }
randread() { # file: 16 reads of 4 KiB at fixed pseudo-random offsets
  python3 - "$1" <<'PY'
import os, sys, random
r = random.Random(42)
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
for _ in range(16):
    off = r.randrange(0, size - 4096) & ~4095
    assert len(os.pread(fd, 4096, off)) == 4096
os.close(fd)
PY
}

rows=()
row() { rows+=("$(printf '| %-44s | %14s | %-34s |' "$1" "$2" "$3")"); }

# Loopback figures on a small machine vary from run to run: each read-side figure (and its
# limit) is the median of ROUNDS rounds, each on a fresh mount with an empty cache.
ROUNDS="${ROUNDS:-3}"
medians() { # lines of space-separated columns -> the median of each column
  python3 -c '
import sys, statistics
rows = [l.split() for l in sys.stdin if l.strip()]
def med(col):
    try:
        m = statistics.median(float(v) for v in col)
    except ValueError:
        return "failed"
    return f"{m:.3f}".rstrip("0").rstrip(".")
print(" ".join(med([r[i] for r in rows]) for i in range(len(rows[0]))))'
}

# Limits measured in the same run.
lim=()
for _ in $(seq "$ROUNDS"); do
  t0=$(now); curl -s -K "$W/curlrc" -o /dev/null "${URL}big.bin"; t1=$(now)
  c=$(mibs "$t0" "$t1")
  cat "$W/data/big.bin" > /dev/null
  t0=$(now); cat "$W/data/big.bin" > /dev/null; t1=$(now)
  l=$(mibs "$t0" "$t1")
  t0=$(now); curl -s -K "$W/curlrc" -o /dev/null -X PROPFIND -H "Depth: 1" "${URL}many/"; t1=$(now)
  p=$(secs "$t0" "$t1")
  t0=$(now); curl -s -K "$W/many.curl"; t1=$(now)
  f=$(secs "$t0" "$t1")
  t0=$(now); cat "$W/data/many/"* > /dev/null; t1=$(now)
  lim+=("$c $l $p $f $(secs "$t0" "$t1")")
done
read -r CURL_MIBS LOCAL_MIBS PROPFIND_S CURL_FILES LOCAL_FILES < <(printf '%s\n' "${lim[@]}" | medians)
# What keeping a download costs: curl saving the file to disk, the page cache emptied first
# as it is before each cold read below. In rounds of its own, after the limits above: emptying
# the page cache in their rounds made their later listings and small-file reads cold.
save=()
for _ in $(seq "$ROUNDS"); do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$W/data/big.bin" > /dev/null
  t0=$(now); curl -s -K "$W/curlrc" -o "$W/curl-copy.bin" "${URL}big.bin"; t1=$(now)
  rm -f "$W/curl-copy.bin"
  save+=("$(mibs "$t0" "$t1")")
done
read -r CURL_SAVE_MIBS < <(printf '%s\n' "${save[@]}" | medians)

# A workload run on a mount: its time, or "failed" when the tool made it fail (its error
# in failures.log); the MiB/s of a whole-file read.
timed() { local t0 t1; t0=$(now); if "$@" > /dev/null 2>>"$W/failures.log"; then t1=$(now); secs "$t0" "$t1"; else echo failed; fi; }
rate() { local s; s=$(timed "$@"); if [ "$s" = failed ]; then echo failed; else python3 -c "print(f'{$SIZE_MIB/$s:.0f}')"; fi; }
cat_all() { cat "$1"/*; }
run_fs() { # name mountpoint pid
  local name="$1" mp="$2" pid="$3"
  local before after
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  # The server's own files and folder back in its caches, as they were when curl read them.
  cat "$W/data/big.bin" "$W/data/big2.bin" > /dev/null
  ls -l "$W/data/many" > /dev/null
  local cold; cold=$(rate cat "$mp/big.bin")
  local rss; rss=$(awk '/VmHWM/{printf "%.0f", $2/1024}' "/proc/$pid/status")
  local warm; warm=$(rate cat "$mp/big.bin")
  before=$(served)
  local rnd; rnd=$(timed randread "$mp/big2.bin")
  sleep 0.5; after=$(served)
  local rndb=$(( (after - before) / 1024 ))
  # Programs that read in small pieces (tar, zip, office suites): the same file, 4 KiB a read.
  local small; small=$(rate dd if="$mp/big2.bin" of=/dev/null bs=4k)
  local lcold; lcold=$(timed ls -l "$mp/many")
  local lwarm; lwarm=$(timed ls -l "$mp/many")
  # Every small file of the folder just listed (grep -r, a file manager's previews), twice.
  local fcold; fcold=$(timed cat_all "$mp/many")
  local fwarm; fwarm=$(timed cat_all "$mp/many")
  echo "$cold $warm $rnd $rndb $lcold $lwarm $rss $small $fcold $fwarm"
}

wait_mounted() { for _ in $(seq 200); do grep -q " $1 " /proc/mounts && return; sleep 0.05; done; }
fuse_unmount() { fusermount3 -u "$1"; }
UNMOUNT=fuse_unmount
wait_gone() { for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; }
rounds() { # name mount-function mountpoint cache-dir: medians of run_fs on ROUNDS fresh mounts
  local name="$1" mountfn="$2" mp="$3" cache="$4" res=()
  for _ in $(seq "$ROUNDS"); do
    rm -rf "$cache"
    "$mountfn"
    res+=("$(run_fs "$name" "$mp" "$MOUNTED")")
    "$UNMOUNT" "$mp"; wait_gone "$MOUNTED"
  done
  rm -rf "$cache"
  printf '%s\n' "${res[@]}" | medians
}
mount_nuage() {
  "$NUAGE" mount "$URL" "$W/mnt" --user bench --password-file "$W/pw" --cache-dir "$W/cache" \
    --dir-ttl 60 --attr-ttl 60 --upload-delay 0 2>"$W/nuage.log" & NPID=$!
  MOUNTED=$NPID
  wait_mounted "$W/mnt"
}
read -r N_COLD N_WARM N_RND N_RNDB N_LCOLD N_LWARM N_RSS N_SMALLREAD N_FCOLD N_FWARM < <(rounds nuage mount_nuage "$W/mnt" "$W/cache")
mount_nuage

# Writes: 1,000 files of 4 KiB, then one large file; close time and time until on the server.
# "On the server" is read off Apache's folder for both tools: all files present (Apache writes
# each to a hidden temporary file first), the large file at its full size.
wait_count() { for _ in $(seq 6000); do [ "$(ls "$1" 2>/dev/null | wc -l)" -ge "$2" ] && return; sleep 0.05; done; }
wait_size() { for _ in $(seq 6000); do [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" = "$2" ] && return; sleep 0.05; done; }
mkdir -p "$W/small"
python3 - "$W/small" <<'PY'
import os, sys
for i in range(1000):
    with open(os.path.join(sys.argv[1], f"s{i:04d}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY
t0=$(now); cp -r "$W/small" "$W/mnt/small"; t1=$(now); wait_count "$W/data/small" 1000; t2=$(now)
N_SMALL_CLOSE=$(secs "$t0" "$t1"); N_SMALL_SERVER=$(secs "$t0" "$t2")
curl -s -K "$W/curlrc" -X MKCOL -o /dev/null "${URL}curlsmall/"
t0=$(now)
ls "$W/small" | xargs -P 4 -I{} curl -s -K "$W/curlrc" -o /dev/null -T "$W/small/{}" "${URL}curlsmall/{}"
t1=$(now); CURL_SMALL=$(secs "$t0" "$t1")
head -c "${SIZE_MIB}M" /dev/urandom > "$W/upload.bin"
want=$(stat -c %s "$W/upload.bin")
res=()
for r in $(seq "$ROUNDS"); do
  t0=$(now); cp "$W/upload.bin" "$W/mnt/upload-$r.bin"; t1=$(now); wait_size "$W/data/upload-$r.bin" "$want"; t2=$(now)
  c0=$(now); curl -s -K "$W/curlrc" -o /dev/null -T "$W/upload.bin" "${URL}curl-upload-$r.bin"; c1=$(now)
  res+=("$(secs "$t0" "$t1") $(mibs "$t1" "$t2") $(mibs "$c0" "$c1") $(secs "$t0" "$t2")")
done
read -r N_BIG_CLOSE N_BIG_UP CURL_UP N_BIG_TOTAL < <(printf '%s\n' "${res[@]}" | medians)

# The same workloads on other tools, when installed: each mounts with the settings closest to
# nuage's (whole-file cache, no upload delay) and is compared row by row at the end.
writes_on() { # tag mountpoint -> "small_close small_server big_close big_up big_total"
  local tag="$1" mp="$2" t0 t1 t2 res=() r sc ss
  t0=$(now)
  if cp -r "$W/small" "$mp/${tag}small" 2>>"$W/failures.log"; then
    t1=$(now); wait_count "$W/data/${tag}small" 1000; t2=$(now)
    sc=$(secs "$t0" "$t1"); ss=$(secs "$t0" "$t2")
  else
    sc=failed; ss=failed
  fi
  for r in $(seq "$ROUNDS"); do
    t0=$(now)
    if cp "$W/upload.bin" "$mp/${tag}upload-$r.bin" 2>>"$W/failures.log"; then
      t1=$(now); wait_size "$W/data/${tag}upload-$r.bin" "$want"; t2=$(now)
      res+=("$(secs "$t0" "$t1") $(mibs "$t1" "$t2") $(secs "$t0" "$t2")")
    else
      res+=("failed failed failed")
    fi
  done
  echo "$sc $ss $(printf '%s\n' "${res[@]}" | medians)"
}
compared=()
compare() { # title tag mount-function unmount-function mountpoint cache-dir distant-mount-function
  local title="$1" tag="$2" mountfn="$3" umountfn="$4" mp="$5" cache="$6" distantfn="$7"
  local cold warm rnd rndb lcold lwarm rss smallread fcold fwarm sc ss bc bu bt df dc dp
  UNMOUNT="$umountfn"
  read -r cold warm rnd rndb lcold lwarm rss smallread fcold fwarm < <(rounds "$tag" "$mountfn" "$mp" "$cache")
  "$mountfn"
  read -r sc ss bc bu bt < <(writes_on "$tag" "$mp")
  "$umountfn" "$mp"; wait_gone "$MOUNTED"
  "$distantfn"
  read -r df dc dp < <(distant "$W/dmnt" "$tag")
  "$umountfn" "$W/dmnt"; wait_gone "$MOUNTED"
  UNMOUNT=fuse_unmount
  compared+=("" "$title, same workloads:"
    "$(printf '| cold %s MiB/s | warm %s MiB/s | 4 KiB reads %s MiB/s | random %s s, %s KiB sent | ls cold %s s, warm %s s | %s files read cold %s s, warm %s s | RSS %s MiB |' \
      "$cold" "$warm" "$smallread" "$rnd" "$rndb" "$lcold" "$lwarm" "$NFILES" "$fcold" "$fwarm" "$rss")"
    "$(printf '| 1000 x 4 KiB: close %s s, on the server %s s | %s MiB: close %s s, upload %s MiB/s (from close until on the server), first write to on the server %s s |' \
      "$sc" "$ss" "$SIZE_MIB" "$bc" "$bu" "$bt")"
    "$(printf '| server 20 ms away: find, 200 folders %s s | cat 200 small files %s s | 200 small files written, on the server %s s |' "$df" "$dc" "$dp")")
}

# A distant server: every request reaches Apache 20 ms late (through a proxy on 127.0.0.1),
# as over a long link. A walk of a tree of 200 folders (find) and a read of a folder's 200
# small files (cat), each on a fresh mount, beside curl asking for the same one request
# after the other on one connection.
python3 - "$W/data" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(100):
    top = os.path.join(d, "tree", f"folder-{i:03d}")
    os.makedirs(os.path.join(top, "sub"))
    for j in range(3):
        with open(os.path.join(top, f"f{j}.txt"), "w") as f:
            f.write("x" * 100)
    with open(os.path.join(top, "sub", "s.txt"), "w") as f:
        f.write("y")
os.makedirs(os.path.join(d, "few"))
for i in range(200):
    with open(os.path.join(d, "few", f"doc-{i:03d}.txt"), "w") as f:
        f.write("z" * (i * 10 + 1))
PY
chown -R www-data:www-data "$W/data/tree" "$W/data/few"
cat > "$W/delay.py" <<'PY'
import asyncio, sys
listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def pipe(r, w, wait):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            if wait:
                await asyncio.sleep(wait)
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(cr, cw):
    sr, sw = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(cr, sw, delay), pipe(sr, cw, 0))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
DPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$W/delay.py" "$DPORT" "$PORT" 0.020 & PXPID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$DPORT/" && break; sleep 0.1; done
DURL="http://127.0.0.1:$DPORT/dav/"
{ cat "$W/curlrc"; echo 'request = "PROPFIND"'; echo 'header = "Depth: 1"'
  printf 'url = "%stree/"\noutput = "/dev/null"\n' "$DURL"
  for i in $(seq 0 99); do
    printf 'url = "%stree/folder-%03d/"\noutput = "/dev/null"\n' "$DURL" "$i"
    printf 'url = "%stree/folder-%03d/sub/"\noutput = "/dev/null"\n' "$DURL" "$i"
  done; } > "$W/tree.curl"
{ cat "$W/curlrc"
  for i in $(seq 0 199); do printf 'url = "%sfew/doc-%03d.txt"\noutput = "/dev/null"\n' "$DURL" "$i"; done
} > "$W/few.curl"
t0=$(now); curl -s -K "$W/tree.curl"; t1=$(now); CURL_DFIND=$(secs "$t0" "$t1")
t0=$(now); curl -s -K "$W/few.curl"; t1=$(now); CURL_DCAT=$(secs "$t0" "$t1")
# 200 of the small files written: copied in, until all are in Apache's folder.
mkdir -p "$W/small200"
for i in $(seq 0 199); do cp "$(printf '%s/small/s%04d.bin' "$W" "$i")" "$W/small200/"; done
curl -s -K "$W/curlrc" -X MKCOL -o /dev/null "${DURL}curldsmall/"
{ cat "$W/curlrc"
  for f in "$W/small200/"*; do printf 'upload-file = "%s"\nurl = "%scurldsmall/%s"\noutput = "/dev/null"\n' "$f" "$DURL" "$(basename "$f")"; done
} > "$W/dput.curl"
t0=$(now); curl -s -K "$W/dput.curl"; t1=$(now); CURL_DPUT=$(secs "$t0" "$t1")
distant() { # mountpoint tag -> "find_s cat_s write_s"
  local mp="$1" tag="$2" t0 t1 w
  local f; f=$(timed find "$mp/tree")
  local c; c=$(timed cat_all "$mp/few")
  t0=$(now)
  if cp -r "$W/small200" "$mp/${tag}dsmall" 2>>"$W/failures.log"; then
    wait_count "$W/data/${tag}dsmall" 200; t1=$(now); w=$(secs "$t0" "$t1")
  else
    w=failed
  fi
  echo "$f $c $w"
}
"$NUAGE" mount "$DURL" "$W/dmnt" --user bench --password-file "$W/pw" --cache-dir "$W/dcache" \
  --upload-delay 0 2>"$W/nuage-distant.log" & DPID=$!
wait_mounted "$W/dmnt"
read -r D_FIND D_CAT D_PUT < <(distant "$W/dmnt" n)
fusermount3 -u "$W/dmnt"; wait_gone "$DPID"; DPID=""
if command -v rclone >/dev/null 2>&1; then
  OBS=$(rclone obscure "$PASS")
  RCLONE_CONFIG="$W/rclone.conf" rclone config create bench webdav url "$URL" vendor other user bench pass "$OBS" >/dev/null
  RCLONE_CONFIG="$W/rclone.conf" rclone config create distant webdav url "$DURL" vendor other user bench pass "$OBS" >/dev/null
  mount_rclone() {
    RCLONE_CONFIG="$W/rclone.conf" rclone mount bench: "$W/rmnt" --vfs-cache-mode full \
       --cache-dir "$W/rcache" --dir-cache-time 60s --vfs-write-back 0s 2>"$W/rclone.log" & RPID=$!
    MOUNTED=$RPID
    wait_mounted "$W/rmnt"
  }
  distant_rclone() {
    RCLONE_CONFIG="$W/rclone.conf" rclone mount distant: "$W/dmnt" --vfs-cache-mode full \
      --cache-dir "$W/drcache" --vfs-write-back 0s 2>"$W/rclone-distant.log" & RPID=$!
    MOUNTED=$RPID
    wait_mounted "$W/dmnt"
  }
  compare "rclone mount --vfs-cache-mode full" r mount_rclone fuse_unmount "$W/rmnt" "$W/rcache" distant_rclone
else
  compared+=("" "(rclone not installed: apt-get install rclone to compare)")
fi
if command -v mount.davfs >/dev/null 2>&1; then
  # davfs2 keeps its cache under /var/cache/davfs2 when mounted by root, one folder per mount
  # point; its credentials come from a secrets file named in a configuration file of this run.
  printf '%s bench %s\n%s bench %s\n' "$URL" "$PASS" "$DURL" "$PASS" > "$W/davfs2.secrets"
  chmod 600 "$W/davfs2.secrets"
  printf 'secrets %s\ndelay_upload 0\nuse_locks 0\ndir_refresh 60\nfile_refresh 1\n' "$W/davfs2.secrets" > "$W/davfs2.conf"
  davfs_cache() { echo "/var/cache/davfs2/127.0.0.1+$(echo "${1#/}" | tr / -)+root"; }
  mount_davfs_at() { # url mountpoint
    rm -rf "$(davfs_cache "$2")"
    mount -t davfs -o "conf=$W/davfs2.conf" "$1" "$2" 2>>"$W/davfs2.log"
    wait_mounted "$2"
    MOUNTED=$(pgrep -n -x mount.davfs)
    VPIDS+=("$MOUNTED")
  }
  mount_davfs() { mount_davfs_at "$URL" "$W/vmnt"; }
  distant_davfs() { mount_davfs_at "$DURL" "$W/dmnt"; }
  davfs_unmount() { umount "$1" >>"$W/davfs2.log" 2>&1; rm -rf "$(davfs_cache "$1")"; }
  compare "davfs2 (mount -t davfs, delay_upload 0, no locks)" v mount_davfs davfs_unmount "$W/vmnt" "$(davfs_cache "$W/vmnt")" distant_davfs
else
  compared+=("" "(davfs2 not installed: apt-get install davfs2 to compare)")
fi

echo
echo "nuage benchmark: Apache mod_dav on 127.0.0.1, ${SIZE_MIB} MiB files, $(nproc) cores"
echo "(read rows, large-file rows and their limits: median of $ROUNDS rounds; small files: one round)"
echo
printf '| %-44s | %14s | %-34s |\n' "workload" "nuage" "limit (same run)"
printf '|%s|%s|%s|\n' "----------------------------------------------" "----------------" "------------------------------------"
row "cold sequential read (MiB/s)" "$N_COLD" "curl: $CURL_MIBS (target >= 50%)"
row "  curl saving the file to disk (MiB/s)" "-" "$CURL_SAVE_MIBS"
row "warm re-read (MiB/s)" "$N_WARM" "local file: $LOCAL_MIBS (target >= 90%)"
row "cold read in 4 KiB reads (MiB/s)" "$N_SMALLREAD" "-"
row "16 x 4 KiB random reads, cold (s)" "$N_RND" "-"
row "  bytes sent by the server (KiB)" "$N_RNDB" "16 blocks of 1 MiB = 16384"
row "ls -l of $NFILES files, cold (s)" "$N_LCOLD" "one PROPFIND: $PROPFIND_S (target <= 1.5x)"
row "ls -l of $NFILES files, warm (s)" "$N_LWARM" "target < 0.100"
row "read the $NFILES files, cold (s)" "$N_FCOLD" "curl, one connection: $CURL_FILES"
row "read the $NFILES files, warm (s)" "$N_FWARM" "local files: $LOCAL_FILES"
row "peak RSS while reading (MiB)" "$N_RSS" "target < 150"
row "1000 x 4 KiB created, last close (s)" "$N_SMALL_CLOSE" "-"
row "1000 x 4 KiB all on the server (s)" "$N_SMALL_SERVER" "4 parallel curl PUTs: $CURL_SMALL (target <= 2x)"
row "${SIZE_MIB} MiB written, close (s)" "$N_BIG_CLOSE" "-"
row "${SIZE_MIB} MiB upload (MiB/s)" "$N_BIG_UP" "curl PUT: $CURL_UP (target >= 80%)"
row "${SIZE_MIB} MiB write until on the server (s)" "$N_BIG_TOTAL" "-"
row "server 20 ms away: find, 200 folders (s)" "$D_FIND" "curl, 201 PROPFINDs in turn: $CURL_DFIND"
row "server 20 ms away: cat 200 small files (s)" "$D_CAT" "curl, 200 GETs in turn: $CURL_DCAT"
row "server 20 ms away: 200 x 4 KiB written (s)" "$D_PUT" "curl, 200 PUTs in turn: $CURL_DPUT"
printf '%s\n' "${rows[@]}"
printf '%s\n' "${compared[@]}"
