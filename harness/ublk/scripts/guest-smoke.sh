#!/bin/sh
# In-guest smoke test of the `ublk` CLI.  Runs as root inside a test VM with
# /dev (devtmpfs), /proc, /sys, /tmp and /run (tmpfs) mounted.
#
# usage: guest-smoke.sh UBLK_BIN [copy|zc|all] [SCRATCH_BLOCKDEV]
#   copy: copy-mode checks, plus "-z must fail cleanly" if the kernel lacks
#         UBLK_F_SPLICE_ZC
#   zc:   zero-copy checks (needs the patched kernel)
#   all:  both (zc part skipped when the kernel lacks the flag)
#   none: only the features line
# SCRATCH_BLOCKDEV (e.g. /dev/vda) gets an ext4 for O_DIRECT backing files.
# Prints PASS:/FAIL: lines and "N passed, M failed" at the end; exit 1 on any
# failure.

UBLK=${1:?usage: guest-smoke.sh UBLK_BIN [copy|zc|all] [SCRATCH_BLOCKDEV]}
WHAT=${2:-all}
SCRATCH=${3:-}
PASS=0
FAIL=0
W=/tmp/ublk-smoke
mkdir -p "$W"

pass() { PASS=$((PASS + 1)); echo "PASS: $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
check() { # check DESC CMD...
	d=$1; shift
	if "$@" >"$W/out" 2>&1; then pass "$d"; else fail "$d"; sed 's/^/    /' "$W/out"; server_log; fi
}
# On a failure, show the tail of the current server's log.
server_log() {
	[ -n "${ID:-}" ] && [ -f "/run/ublk/ublkb$ID.conf" ] || return 0
	l=$(sed -n 's/^log=//p' "/run/ublk/ublkb$ID.conf")
	[ -n "$l" ] && [ -f "$l" ] && { echo "    --- server log $l"; tail -n 20 "$l" | sed 's/^/    | /'; }
}
check_fails() { # check_fails DESC EXPECTED_TEXT CMD...
	d=$1; t=$2; shift 2
	if "$@" >"$W/out" 2>&1; then
		fail "$d (succeeded)"; sed 's/^/    /' "$W/out"
	elif grep -q -- "$t" "$W/out"; then
		pass "$d"; sed 's/^/    /' "$W/out"
	else
		fail "$d (message lacks '$t')"; sed 's/^/    /' "$W/out"
	fi
}
no_devices() { # nothing under /dev and nothing listed
	! ls /dev/ublkb* /dev/ublkc* >/dev/null 2>&1 && [ "$($UBLK list | wc -l)" -eq 1 ]
}
# add ARGS... -> sets ID (and prints the CLI's line)
add() {
	out=$($UBLK add "$@" 2>&1); rc=$?
	echo "    ublk add $*: rc=$rc: $out"
	ID=$(echo "$out" | sed -n 's/^dev_id \([0-9]*\) .*/\1/p')
	[ $rc -eq 0 ] && [ -n "$ID" ] && [ -b "/dev/ublkb$ID" ]
}
del() { $UBLK del -n "$1" && [ ! -e "/dev/ublkb$1" ] && [ ! -e "/dev/ublkc$1" ] && [ ! -e "/run/ublk/ublkb$1.conf" ]; }

# data_check DEV BACKING: write a pattern through the device at a few places
# (O_DIRECT and buffered), read back and compare, then compare the whole
# device with the backing file.
data_check() {
	dev=$1; back=$2
	dd if=/dev/urandom of="$W/pat" bs=1M count=8 status=none || return 1
	dd if="$W/pat" of="$dev" bs=1M seek=3 oflag=direct conv=notrunc status=none || return 1
	dd if="$W/pat" of="$dev" bs=4k count=77 seek=1 conv=fsync,notrunc status=none || return 1
	dd if="$W/pat" of="$dev" bs=512 count=9 skip=5 seek=40001 oflag=direct conv=notrunc status=none || return 1
	sync
	echo 3 >/proc/sys/vm/drop_caches
	dd if="$dev" of="$W/rb" bs=1M skip=3 count=8 iflag=direct status=none || return 1
	cmp "$W/pat" "$W/rb" || return 1
	cmp -n 315392 -i 0:4096 "$W/pat" "$dev" || return 1
	# whole device vs backing
	cmp "$dev" "$back" || return 1
}

kernel_has_zc() { $UBLK features | grep -q '^UBLK_F_SPLICE_ZC *yes'; }

echo "== ublk smoke: $(uname -r), what=$WHAT"
check "features" $UBLK features
$UBLK features

if [ -n "$SCRATCH" ]; then
	mkdir -p /tmp/scratch
	mkfs.ext4 -q -F "$SCRATCH" && mount "$SCRATCH" /tmp/scratch
	DIRECTDIR=/tmp/scratch
else
	DIRECTDIR=
fi

copy_mode() {
	# ---- bad input: clear message, non-zero, nothing left behind ----
	check_fails "missing backing file" "does not exist" $UBLK add -t loop -f /tmp/nope.img
	: >"$W/empty.img"
	check_fails "zero-size backing file" "empty" $UBLK add -t loop -f "$W/empty.img"
	dd if=/dev/zero of="$W/small.img" bs=1M count=4 status=none
	check_fails "queue depth 5000" "between 1 and 4096" $UBLK add -t loop -f "$W/small.img" --buffered-io -d 5000
	check_fails "queue depth 0" "between 1 and 4096" $UBLK add -t loop -f "$W/small.img" --buffered-io -d 0
	check_fails "O_DIRECT on tmpfs" "buffered-io" $UBLK add -t loop -f "$W/small.img"
	check "no device left after bad input" no_devices

	if ! kernel_has_zc; then
		check_fails "-z without UBLK_F_SPLICE_ZC (loop)" "lacks UBLK_F_SPLICE_ZC" \
			$UBLK add -t loop -f "$W/small.img" --buffered-io -z
		check_fails "-z without UBLK_F_SPLICE_ZC (null)" "patches/" $UBLK add -t null -z
		check "no device left after -z" no_devices
	fi

	for q in 1 2; do
		# ---- loop, O_DIRECT backing on ext4 ----
		if [ -n "$DIRECTDIR" ]; then
			b=$DIRECTDIR/back$q.img
			dd if=/dev/urandom of="$b" bs=1M count=48 status=none
			if add -t loop -f "$b" -q $q -d 64; then
				pass "add loop O_DIRECT q=$q"
				check "data loop O_DIRECT q=$q" data_check /dev/ublkb$ID "$b"
				$UBLK list
				check "list shows loop q=$q" sh -c "$UBLK list | grep -q '^$ID .*LIVE.*loop.*$b (direct).* $q '"
				check "del loop O_DIRECT q=$q" del $ID
			else
				fail "add loop O_DIRECT q=$q"
			fi
		fi
		# ---- loop, buffered, on tmpfs ----
		b=$W/tback$q.img
		dd if=/dev/urandom of="$b" bs=1M count=32 status=none
		if add -t loop -f "$b" --buffered-io -q $q; then
			pass "add loop buffered q=$q"
			check "data loop buffered q=$q" data_check /dev/ublkb$ID "$b"
			check "list shows buffered q=$q" sh -c "$UBLK list | grep -q '(buffered)'"
			check "discard q=$q" sh -c "blkdiscard -o 1048576 -l 1048576 /dev/ublkb$ID && cmp -n 1048576 -i 0:1048576 /dev/zero /dev/ublkb$ID && cmp /dev/ublkb$ID $b"
			check "write zeroes q=$q" sh -c "blkdiscard -z -o 4194304 -l 1048576 /dev/ublkb$ID && cmp -n 1048576 -i 0:4194304 /dev/zero /dev/ublkb$ID && cmp /dev/ublkb$ID $b"
			check "del loop buffered q=$q" del $ID
		else
			fail "add loop buffered q=$q"
		fi
		# ---- null ----
		if add -t null -s 256M -q $q; then
			pass "add null q=$q"
			check "null write q=$q" dd if=/dev/urandom of=/dev/ublkb$ID bs=1M count=16 oflag=direct status=none
			check "null read q=$q" dd if=/dev/ublkb$ID of=/dev/null bs=1M count=64 iflag=direct status=none
			check "null size" sh -c "[ \$(blockdev --getsize64 /dev/ublkb$ID) -eq 268435456 ]"
			check "del null q=$q" del $ID
		else
			fail "add null q=$q"
		fi
	done
	check "no device left" no_devices
}

lifecycle() {
	b=$W/life.img
	dd if=/dev/urandom of="$b" bs=1M count=16 status=none
	# ---- explicit id ----
	if add -t loop -f "$b" --buffered-io -n 5; then
		check "explicit id 5" [ "$ID" = 5 ]
		check_fails "id in use" "already in use" $UBLK add -t loop -f "$b" --buffered-io -n 5
		check "del 5" del 5
	else
		fail "add -n 5"
	fi
	# ---- SIGTERM / SIGINT on a foreground server, I/O in flight ----
	for sig in TERM INT; do
		$UBLK add -t loop -f "$b" --buffered-io --foreground >"$W/fg.out" 2>&1 &
		pid=$!
		i=0; while [ $i -lt 100 ] && ! grep -q '^dev_id' "$W/fg.out"; do sleep 0.1; i=$((i + 1)); done
		ID=$(sed -n 's/^dev_id \([0-9]*\) .*/\1/p' "$W/fg.out")
		if [ -n "$ID" ]; then
			dd if=/dev/urandom of=/dev/ublkb$ID bs=64k count=200 oflag=direct status=none 2>/dev/null &
			ddpid=$!
			sleep 0.3
			kill -$sig $pid
			wait $pid; rc=$?
			wait $ddpid
			check "SIG$sig: server exit 0" [ $rc -eq 0 ]
			check "SIG$sig: device gone" sh -c "[ ! -e /dev/ublkb$ID ] && [ ! -e /dev/ublkc$ID ]"
			check "SIG$sig: nothing listed" no_devices
		else
			fail "foreground add for SIG$sig"; cat "$W/fg.out"
			kill $pid 2>/dev/null; wait $pid
		fi
	done
	# ---- del -a ----
	add -t null -s 64M && a=$ID && add -t null -s 64M && bb=$ID
	check "del -a" $UBLK del -a
	check "del -a: gone" no_devices
	# ---- killed server ----
	if add -t loop -f "$b" --buffered-io -q 2; then
		spid=$(sed -n 's/^pid=//p' /run/ublk/ublkb$ID.conf)
		echo "    server pid $spid"
		kill -9 "$spid"
		sleep 0.2
		# I/O to the orphaned device must fail, not hang
		check "I/O after kill -9 fails (no hang)" sh -c "! timeout 60 dd if=/dev/ublkb$ID of=/dev/null bs=4k count=1 iflag=direct"
		check "del after kill -9" timeout 60 $UBLK del -n $ID
		check "kill -9: gone" no_devices
	else
		fail "add for kill -9"
	fi
	check_fails "del of a missing device" "does not exist" $UBLK del -n 77
}

fs_check() { # fs_check ADD_ARGS...: mkfs + mount + files + umount + e2fsck
	if add "$@"; then
		dev=/dev/ublkb$ID
		check "mkfs.ext4 ($*)" mkfs.ext4 -q -F $dev
		mkdir -p /tmp/m
		check "mount ($*)" mount $dev /tmp/m
		dd if=/dev/urandom of="$W/f1" bs=1M count=12 status=none
		cp "$W/f1" /tmp/m/f1
		mkdir -p /tmp/m/d && for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/tmp/m/d/$i bs=4k count=$i status=none; done
		sync
		umount /tmp/m
		echo 3 >/proc/sys/vm/drop_caches
		check "e2fsck -fn ($*)" e2fsck -fn $dev
		mount $dev /tmp/m && check "file intact ($*)" cmp "$W/f1" /tmp/m/f1
		umount /tmp/m
		check "del ($*)" del $ID
	else
		fail "add $*"
	fi
}

zc_mode() {
	if ! kernel_has_zc; then
		echo "SKIP: zero copy: the kernel lacks UBLK_F_SPLICE_ZC"
		return
	fi
	for q in 1 2; do
		if [ -n "$DIRECTDIR" ]; then
			b=$DIRECTDIR/zback$q.img
			dd if=/dev/urandom of="$b" bs=1M count=48 status=none
			if add -t loop -f "$b" -z -q $q; then
				pass "add loop -z O_DIRECT q=$q"
				check "list shows SPLICE_ZC" sh -c "$UBLK list | grep -q 'SPLICE_ZC'"
				check "data loop -z O_DIRECT q=$q" data_check /dev/ublkb$ID "$b"
				check "del -z q=$q" del $ID
			else
				fail "add loop -z O_DIRECT q=$q"
			fi
		fi
		b=$W/zt$q.img
		dd if=/dev/urandom of="$b" bs=1M count=32 status=none
		if add -t loop -f "$b" -z --buffered-io -q $q; then
			pass "add loop -z buffered q=$q"
			check "data loop -z buffered q=$q" data_check /dev/ublkb$ID "$b"
			check "del -z buffered q=$q" del $ID
		else
			fail "add loop -z buffered q=$q"
		fi
		if add -t null -z -q $q; then
			check "null -z write q=$q" dd if=/dev/urandom of=/dev/ublkb$ID bs=1M count=16 oflag=direct status=none
			check "null -z read q=$q" dd if=/dev/ublkb$ID of=/dev/null bs=1M count=16 iflag=direct status=none
			check "del null -z q=$q" del $ID
		else
			fail "add null -z q=$q"
		fi
	done
	if [ -n "$DIRECTDIR" ]; then
		dd if=/dev/zero of=$DIRECTDIR/zfs.img bs=1M count=96 status=none
		fs_check -t loop -f $DIRECTDIR/zfs.img -z -q 2
	fi
	dd if=/dev/zero of=$W/zfs2.img bs=1M count=96 status=none
	fs_check -t loop -f $W/zfs2.img -z --buffered-io
	# ---- server killed in the middle of zero-copy I/O ----
	b=$W/zkill.img
	dd if=/dev/urandom of="$b" bs=1M count=64 status=none
	if add -t loop -f "$b" -z --buffered-io -q 2; then
		spid=$(sed -n 's/^pid=//p' /run/ublk/ublkb$ID.conf)
		(dd if=/dev/urandom of=/dev/ublkb$ID bs=256k count=200 oflag=direct status=none 2>/dev/null &
		 dd if=/dev/ublkb$ID of=/dev/null bs=256k count=200 iflag=direct status=none 2>/dev/null &
		 wait) &
		iopid=$!
		sleep 0.5
		kill -9 "$spid"
		check "-z kill -9 mid-I/O: I/O ends (no hang)" timeout 120 sh -c "while kill -0 $iopid 2>/dev/null; do sleep 0.2; done"
		check "-z del after kill -9" timeout 60 $UBLK del -n $ID
		check "-z kill -9: gone" no_devices
	else
		fail "add -z for kill -9"
	fi
	check "no device left (zc)" no_devices
}

case $WHAT in
copy) copy_mode; lifecycle ;;
zc) zc_mode ;;
all) copy_mode; lifecycle; zc_mode ;;
none) ;;
esac
if [ -n "$DIRECTDIR" ] && [ "$WHAT" = copy -o "$WHAT" = all ]; then
	dd if=/dev/zero of=$DIRECTDIR/fs.img bs=1M count=96 status=none
	fs_check -t loop -f $DIRECTDIR/fs.img -q 2
fi

echo "ublk smoke: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
