#!/bin/sh
# The shell workload (UnixBench tst.sh): sort, od | sort -n, grep | tee | wc on an 8 KiB
# text file, then remove what it made. bench_shell runs it again and again in a scratch
# directory and counts runs per minute.
src=/opt/xenhpt/bench/sort.src
sort > sort.$$ < $src
od sort.$$ | sort -n -k 1 > od.$$
grep the sort.$$ | tee grep.$$ | wc > wc.$$
rm sort.$$ grep.$$ od.$$ wc.$$
