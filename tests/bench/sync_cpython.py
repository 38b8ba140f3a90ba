"""The synchronisation benchmark, CPython's side: the same figures as
tests/bench/sync.lua, with multiprocessing's objects (fork start method).
Usage: python3 tests/bench/sync_cpython.py [scale]"""
import multiprocessing as mp
import sys
import time


def median(t):
    t.sort()
    return t[len(t) // 2]


def pingpong_child(a, b, n):
    for _ in range(n):
        a.wait()
        a.clear()
        b.set()


def counter_child(c, g, e, k, count):
    lock = c.get_lock()
    g.wait()
    for _ in range(count):
        lock.acquire()
        c.value = c.value + 1
        lock.release()
    e[k] = time.monotonic()


def barrier_child(b, n):
    for _ in range(n):
        b.wait()


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1
    ctx = mp.get_context("fork")

    rounds = int(2000 * scale)
    ping, pong = ctx.Event(), ctx.Event()
    p = ctx.Process(target=pingpong_child, args=(ping, pong, rounds))
    p.start()
    times = []
    for _ in range(rounds):
        t = time.monotonic()
        ping.set()
        pong.wait()
        pong.clear()
        times.append(time.monotonic() - t)
    p.join()
    print("event.wake_us %.2f" % (median(times) / 2 * 1e6))

    n = int(1000000 * scale)
    lock = ctx.Lock()
    t = time.monotonic()
    for _ in range(n):
        lock.acquire()
        lock.release()
    print("lock.uncontended_ns %.1f" % ((time.monotonic() - t) / n * 1e9))

    n = int(50000 * scale)
    counter, go, ends = ctx.Value("i", 0), ctx.Event(), ctx.Array("d", 2)
    procs = [ctx.Process(target=counter_child, args=(counter, go, ends, i, n)) for i in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t = time.monotonic()
    go.set()
    for p in procs:
        p.join()
    assert counter.value == 2 * n
    print("counter.contended_us %.3f" % ((max(ends[0], ends[1]) - t) / (2 * n) * 1e6))

    rounds = int(2000 * scale)
    barrier = ctx.Barrier(2)
    p = ctx.Process(target=barrier_child, args=(barrier, rounds))
    p.start()
    barrier.wait()
    t = time.monotonic()
    for _ in range(rounds - 1):
        barrier.wait()
    print("barrier.round_us %.2f" % ((time.monotonic() - t) / (rounds - 1) * 1e6))
    p.join()


if __name__ == "__main__":
    main()
