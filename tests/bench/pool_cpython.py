# The pool benchmark, CPython's side: the workloads of tests/bench/pool.lua
# through multiprocessing.Pool, one repetition of one workload per run,
# printing the same "name value" lines. tests/bench/pool_bench.sh alternates
# the two. (Not named pool.py, so that tests/bench/run.sh, which runs
# lmp and CPython one after the other, leaves this pair to pool_bench.sh.)
#
# Usage: python3 tests/bench/pool_cpython.py WORKLOAD [fork|spawn]
# QUICK=1 in the environment shrinks the sizes, as on lmp's side.
import gc
import multiprocessing as mp
import os
import statistics
import sys
import time

QUICK = os.environ.get("QUICK") == "1"
APPLY_CALLS = 2000
MAP_ITEMS = 200000 if QUICK else 1000000
IMAP_ITEMS = 20000 if QUICK else 100000
ASYNC_ITEMS = 20000 if QUICK else 100000
STARTUPS = 3 if QUICK else 5
BIG = (20 if QUICK else 100) * 1024 * 1024

clock = time.perf_counter


def out(name, value):
    print("%s %.6g" % (name, value))
    sys.stdout.flush()


def identity(x):
    return x


def length(x):
    return len(x)


BENCH_BIG = None


def make_big(n):
    global BENCH_BIG
    BENCH_BIG = bytes(range(1, 9)) * (n // 8)


def big():
    return BENCH_BIG


def apply():
    with mp.Pool(2) as pool:
        for _ in range(200):
            pool.apply(identity, (1,))
        times = []
        start = clock()
        for _ in range(APPLY_CALLS):
            t0 = clock()
            pool.apply(identity, (1,))
            times.append(clock() - t0)
        total = clock() - start
    out("apply.median_us", statistics.median(times) * 1e6)
    out("apply.mean_us", total / APPLY_CALLS * 1e6)


def map_():
    with mp.Pool(2) as pool:
        pool.map(identity, [1, 2, 3, 4])
        items = list(range(1, MAP_ITEMS + 1))
        gc.collect()
        start = clock()
        results = pool.map(identity, items)
        took = clock() - start
        assert len(results) == MAP_ITEMS
    out("map.items_per_s", MAP_ITEMS / took)


def imap():
    with mp.Pool(2) as pool:
        pool.map(identity, [1, 2, 3, 4])
        items = list(range(1, IMAP_ITEMS + 1))
        gc.collect()
        start = clock()
        count = 0
        for _ in pool.imap(identity, items):
            count += 1
        took = clock() - start
        assert count == IMAP_ITEMS
    out("imap.items_per_s", IMAP_ITEMS / took)


def async_():
    with mp.Pool(2) as pool:
        pool.map(identity, [1, 2, 3, 4])
        gc.collect()
        start, cpu = clock(), time.process_time()
        results = [pool.apply_async(identity, (1,)) for _ in range(ASYNC_ITEMS)]
        for r in results:
            r.wait()
        took = clock() - start
        # This process's threads (the pool's task and result handlers
        # among them), not the workers: lmp's os.clock() alike.
        cpu = time.process_time() - cpu
    out("async.items_per_s", ASYNC_ITEMS / took)
    out("async.main_cpu_us", cpu / ASYNC_ITEMS * 1e6)


def startup():
    times = []
    for i in range(STARTUPS + 1):
        start = clock()
        pool = mp.Pool(2)
        pool.apply(identity, (1,))
        pool.close()
        pool.join()
        if i > 0:
            times.append(clock() - start)
    out("startup.ms", statistics.median(times) * 1e3)


def bigstring():
    with mp.Pool(1, initializer=make_big, initargs=(BIG,)) as pool:
        s = bytes(range(8, 0, -1)) * (BIG // 8)
        assert pool.apply(length, (s,)) == BIG
        assert len(pool.apply(big)) == BIG
        send, receive = [], []
        for _ in range(3):
            gc.collect()
            t0 = clock()
            pool.apply(length, (s,))
            send.append(clock() - t0)
            gc.collect()
            t0 = clock()
            r = pool.apply(big)
            receive.append(clock() - t0)
            del r
    mb = BIG / (1024 * 1024)
    out("bigstring.send_MB_per_s", mb / statistics.median(send))
    out("bigstring.return_MB_per_s", mb / statistics.median(receive))


def private_kb(pid):
    kb = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kb += int(line.split()[1])
    return kb


def memory():
    with mp.Pool(2) as pool:
        pool.apply(identity, (1,))
        time.sleep(0.2)
        kbs = [private_kb(p.pid) for p in pool._pool]
    out("memory.idle_worker_kB", statistics.median(kbs))


WORKLOADS = {"apply": apply, "map": map_, "imap": imap, "async": async_,
             "startup": startup, "bigstring": bigstring, "memory": memory}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in WORKLOADS:
        sys.stderr.write("usage: python3 pool_cpython.py WORKLOAD [fork|spawn] (%s)\n"
                         % ", ".join(sorted(WORKLOADS)))
        sys.exit(2)
    mp.set_start_method(sys.argv[2] if len(sys.argv) > 2 else "fork")
    WORKLOADS[sys.argv[1]]()
