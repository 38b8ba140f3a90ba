"""The workloads benchmark, CPython's side: the algorithms of
tests/bench/workloads/workloads.lua written again in Python, the same
chunks of work, the same checksums; one workload, one way, one run.

Usage: python3 tests/bench/workloads/run.py WAY WORKLOAD
  serial    the workload on this process alone
  pool      through multiprocessing.Pool(2), the platform's default start
            method, the pool started before the clock starts
  idle      successive maps on the same Pool(2): how long the workers wait
  startup   Pool(1), Pool(2), Pool(8) made in this process, until it
            returns and until it answers a first task, in ms
Prints "seconds <wall-clock time>" and the checksum lines after "checksum".
QUICK=1 in the environment shrinks the sizes.

A function that closes over a value in Lua is a module-level function
bound to the value with functools.partial here: what CPython's Pool can
send to a worker.
"""
import functools
import math
import multiprocessing
import os
import sys
import time

QUICK = os.environ.get("QUICK") == "1"
clock = time.monotonic


# Mandelbrot: one task per row of an N x N grid, 50 iterations.
def mandelbrot_row(size, y):
    out = bytearray()
    ci = 2.0 * y / size - 1.0
    byte = bit = 0
    for x in range(size):
        cr = 2.0 * x / size - 1.5
        zr = zi = 0.0
        inside = 1
        for _ in range(50):
            zr2, zi2 = zr * zr, zi * zi
            if zr2 + zi2 > 4.0:
                inside = 0
                break
            zi = 2.0 * zr * zi + ci
            zr = zr2 - zi2 + cr
        byte = byte * 2 + inside
        bit += 1
        if bit == 8:
            out.append(byte)
            byte = bit = 0
    if bit > 0:
        out.append(byte << (8 - bit))
    return bytes(out)


def mandelbrot_setup():
    return {"size": 400 if QUICK else 800}


def mandelbrot_run(ex, state):
    size = state["size"]
    image = b"".join(ex.map(functools.partial(mandelbrot_row, size), range(size)))
    count = sum(bin(b).count("1") for b in image)
    return "%d bytes, %d in the set" % (len(image), count)


# Spectral norm: 10 rounds of the power method on A'A, each product a map
# over the rows with the current vector bound to the function.
def spectral_row(v, size, transposed, i):
    total = 0.0
    for j in range(size):
        a, b = (j, i) if transposed else (i, j)
        total += v[j] / ((a + b) * (a + b + 1) // 2 + a + 1)
    return total


def spectral_setup():
    return {"size": 300 if QUICK else 600}


def spectral_run(ex, state):
    size = state["size"]

    def times(v, transposed):
        return ex.map(functools.partial(spectral_row, v, size, transposed), range(size))

    u = [1.0] * size
    for _ in range(10):
        v = times(times(u, False), True)
        u = times(times(v, False), True)
    vbv = sum(a * b for a, b in zip(u, v))
    vv = sum(b * b for b in v)
    return "%.9f" % math.sqrt(vbv / vv)


# Fannkuch-redux: blocks of consecutively numbered permutations.
def fannkuch_block(n, block_size, first):
    factorial = [1] * (n + 1)
    for i in range(1, n + 1):
        factorial[i] = factorial[i - 1] * i
    perm = list(range(n))
    count = [0] * n
    index = first
    for i in range(n - 1, 0, -1):
        d, index = divmod(index, factorial[i])
        count[i] = d
        perm[: i + 1] = perm[d : i + 1] + perm[:d]
    checksum = max_flips = 0
    for number in range(first, first + block_size):
        head = perm[0]
        if head != 0:
            flipped = perm[:]
            flips = 1
            while True:
                next_head = flipped[head]
                if next_head == 0:
                    break
                flipped[head] = head
                if head > 2:
                    flipped[1:head] = flipped[head - 1 : 0 : -1]
                head = next_head
                flips += 1
            if flips > max_flips:
                max_flips = flips
            checksum += flips if number % 2 == 0 else -flips
        first_value = perm[1]
        perm[1], perm[0] = perm[0], first_value
        i = 1
        count[i] += 1
        while count[i] > i:
            count[i] = 0
            i += 1
            if i >= n:
                break
            next_value = perm[1]
            perm[0] = next_value
            perm[1:i] = perm[2 : i + 1]
            perm[i] = first_value
            first_value = next_value
            count[i] += 1
    return checksum, max_flips


def fannkuch_setup():
    return {"n": 9 if QUICK else 10, "blocks": 60}


def fannkuch_run(ex, state):
    n, blocks = state["n"], state["blocks"]
    block_size = math.factorial(n) // blocks
    results = ex.map(
        functools.partial(fannkuch_block, n, block_size), [b * block_size for b in range(blocks)]
    )
    checksum = sum(r[0] for r in results)
    max_flips = max(r[1] for r in results)
    return "%d\nPfannkuchen(%d) = %d" % (checksum, n, max_flips)


# Binary trees: the stretch tree, the long-lived tree, and each depth's
# trees in four ranges.
def tree_build(depth):
    if depth == 0:
        return ()
    depth -= 1
    return (tree_build(depth), tree_build(depth))


def tree_check(tree):
    if tree:
        return 1 + tree_check(tree[0]) + tree_check(tree[1])
    return 1


def trees_walk(job):
    depth, count = job
    return sum(tree_check(tree_build(depth)) for _ in range(count))


def trees_setup():
    return {"max_depth": 12 if QUICK else 15}


def trees_run(ex, state):
    max_depth = state["max_depth"]
    jobs = [(max_depth + 1, 1), (max_depth, 1)]
    for depth in range(4, max_depth + 1, 2):
        trees = 1 << (max_depth - depth + 4)
        for part in range(4):
            jobs.append((depth, trees // 4 + (1 if part < trees % 4 else 0)))
    results = ex.map(trees_walk, jobs)
    lines = {}
    for i, (depth, _) in enumerate(jobs):
        key = ("depth %d" % depth) if i < 2 else "%d trees of depth %d" % (
            1 << (max_depth - depth + 4), depth)
        lines[key] = lines.get(key, 0) + results[i]
    return "\n".join("%s check %d" % (key, value) for key, value in lines.items())


# k-nucleotide-like: count k-mers of a generated DNA string in chunks.
TARGETS = ["GGT", "GGTA", "GGTATT", "GGTATTTTAATT", "GGTATTTTAATTTATAGT"]
KS = [1, 2, 3, 4, 6, 12, 18]


def knucleotide_count(piece):
    owned, text = piece
    result = {}
    for k in KS:
        counts = {}
        for p in range(min(owned, len(text) - k + 1)):
            key = text[p : p + k]
            counts[key] = counts.get(key, 0) + 1
        if k <= 6:
            result[k] = counts
        else:
            for target in TARGETS:
                if len(target) == k:
                    result[target] = counts.get(target, 0)
    return result


def knucleotide_setup():
    length = 100000 if QUICK else 400000
    letters = "acgt"
    weights = [0.3029549426680, 0.1979883004921, 0.1975473066391, 0.3015094502008]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    seed, out = 42, []
    for _ in range(length):
        seed = (seed * 3877 + 29573) % 139968
        r = seed / 139968
        pick = 3
        for j in range(3):
            if r < cumulative[j]:
                pick = j
                break
        out.append(letters[pick])
    return {"dna": "".join(out).upper(), "chunks": 16}


def knucleotide_run(ex, state):
    dna, chunks = state["dna"], state["chunks"]
    step = -(-len(dna) // chunks)
    pieces = []
    for start in range(0, len(dna), step):
        owned = min(step, len(dna) - start)
        pieces.append((owned, dna[start : start + owned + 17]))
    totals = {}
    for result in ex.map(knucleotide_count, pieces):
        for key, value in result.items():
            if isinstance(value, dict):
                into = totals.setdefault(key, {})
                for kmer, n in value.items():
                    into[kmer] = into.get(kmer, 0) + n
            else:
                totals[key] = totals.get(key, 0) + value
    lines = []
    for k in (1, 2):
        for kmer in sorted(totals[k]):
            lines.append("%s %d" % (kmer, totals[k][kmer]))
    for target in TARGETS:
        n = totals[len(target)].get(target, 0) if len(target) <= 6 else totals[target]
        lines.append("%d\t%s" % (n, target))
    lines.append("%d distinct 6-mers" % len(totals[6]))
    return "\n".join(lines)


# Tasks of a given size. Python runs this loop about eleven times slower than
# lua5.4, so a millisecond is fewer rounds here (measured on the machine
# of the README's figures): the tasks last as long as Lua's, and the
# checksums differ from Lua's.
WORK_PER_MS = 8000


def spin(steps):
    x = steps
    for _ in range(steps):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def medium_setup():
    return {"tasks": 5000 if QUICK else 20000}


def medium_run(ex, state):
    steps = WORK_PER_MS // 5
    total = 0
    for r in ex.imap_unordered(spin, [steps + i % 7 for i in range(1, state["tasks"] + 1)]):
        total = (total + r) % 1000000007
    return str(total)


def uneven_setup():
    seed, items = 7, []
    for _ in range(100 if QUICK else 300):
        seed = (seed * 3877 + 29573) % 139968
        items.append(math.floor((0.1 + 19.9 * seed / 139968) * WORK_PER_MS))
    return {"items": items}


def uneven_run(ex, state):
    total = 0
    for r in ex.map(spin, state["items"]):
        total = (total + r) % 1000000007
    return str(total)


WORKLOADS = {
    "mandelbrot": (mandelbrot_setup, mandelbrot_run),
    "spectral-norm": (spectral_setup, spectral_run),
    "fannkuch-redux": (fannkuch_setup, fannkuch_run),
    "binary-trees": (trees_setup, trees_run),
    "k-nucleotide": (knucleotide_setup, knucleotide_run),
    "medium-tasks": (medium_setup, medium_run),
    "uneven-tasks": (uneven_setup, uneven_run),
}


class Serial:
    def map(self, f, items):
        return [f(item) for item in items]

    imap_unordered = map


def run_workload(name, executor):
    setup, run = WORKLOADS[name]
    state = setup()
    start = clock()
    checksum = run(executor, state)
    took = clock() - start
    print("seconds %.6f" % took)
    print("checksum")
    print(checksum)


def idle_task(v, i):
    started = clock()
    total = 0.0
    for j in range(len(v)):
        total += v[j] / (i + j + 1)
    return total, started, clock(), os.getpid()


def measure_idle():
    size, maps = 1000, 10 if QUICK else 30
    vector = [1.0 / (i + 1) for i in range(size)]
    gaps, idle_fractions, last_end = [], [], {}
    with multiprocessing.Pool(2) as pool:
        pool.map(abs, range(4))
        for m in range(maps):
            map_start = clock()
            results = pool.map(functools.partial(idle_task, vector), range(1, size + 1))
            map_end = clock()
            first_start, final_end, busy = {}, {}, 0.0
            for _, started, ended, pid in results:
                first_start[pid] = min(first_start.get(pid, started), started)
                final_end[pid] = max(final_end.get(pid, ended), ended)
                busy += ended - started
            if m > 0:
                gaps += [t - last_end[pid] for pid, t in first_start.items() if pid in last_end]
                idle_fractions.append(1 - busy / (2 * (map_end - map_start)))
            last_end = final_end
            vector = [r[0] for r in results]
    gaps.sort()
    idle_fractions.sort()
    print("idle.gap_between_maps_us %.6g" % (gaps[(len(gaps) - 1) // 2] * 1e6))
    print("idle.fraction_of_map %.6g" % idle_fractions[(len(idle_fractions) - 1) // 2])


def measure_startup():
    for n in (1, 2, 8):
        start = clock()
        pool = multiprocessing.Pool(n)
        made = clock()
        pool.map(abs, [1])
        answered = clock()
        pool.close()
        pool.join()
        print("startup.pool%d_ms %.6g" % (n, (answered - start) * 1e3))
        print("startup.pool%d_made_ms %.6g" % (n, (made - start) * 1e3))


def main():
    way = sys.argv[1]
    if way == "serial":
        run_workload(sys.argv[2], Serial())
    elif way == "pool":
        with multiprocessing.Pool(2) as pool:
            pool.map(abs, range(4))
            run_workload(sys.argv[2], pool)
    elif way == "idle":
        measure_idle()
    elif way == "startup":
        measure_startup()
    else:
        sys.exit("usage: run.py serial|pool|idle|startup WORKLOAD")


if __name__ == "__main__":
    main()
