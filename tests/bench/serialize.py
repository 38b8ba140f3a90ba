# The serialize benchmark's CPython side: pickle protocol 5 on the same
# workloads as serialize.lua. Prints "workload.op seconds" lines (the median
# of several runs); tests/bench/run.sh puts them beside lmp's.
import gc
import pickle
import statistics
import sys
import time

REPEAT = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def median_time(fn):
    times = []
    for _ in range(REPEAT):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name, value):
    data = pickle.dumps(value, protocol=5)
    print("%s.dumps %.6f" % (name, median_time(lambda: pickle.dumps(value, protocol=5))))
    print("%s.loads %.6f" % (name, median_time(lambda: pickle.loads(data))))
    sys.stdout.flush()


N = 1000000
measure("floats", [i + 0.5 for i in range(N)])
measure("integers", [i % 100 for i in range(N)])
big = bytes(range(256)) * (100 * 1024 * 1024 // 256)
measure("string", big)
# One copy of the 100 MB into fresh memory: what a memcpy costs here.
print("string.memcpy %.6f" % median_time(lambda: bytearray(big)))
measure("records", [{"id": i, "name": "user%d" % i, "score": i * 0.25,
                     "active": i % 3 == 0, "group": i % 7} for i in range(100000)])
