"""The whole-program start-up figure, CPython's side of one_task.lua: a
script that makes a pool, runs one task and ends."""
import multiprocessing

if __name__ == "__main__":
    pool = multiprocessing.Pool(2)
    assert pool.apply(abs, (-1,)) == 1
    pool.close()
    pool.join()
