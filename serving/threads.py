"""Thread pools of the numerical libraries, pinned for small machines, and the engine's thread.

The defaults size every pool to the machine (OpenMP in FAISS, OpenBLAS, torch), which on a
2-core machine shared with a broker oversubscribes it. OpenMP's thread count is a property of
each calling thread: ``omp_set_num_threads`` in the main thread leaves any thread started
later at the default (every core). The worker therefore runs its engine in one thread of its
own (:func:`engine_executor`) that pins the pools for itself when it starts; an engine run by
``asyncio.to_thread`` searched FAISS with two OpenMP threads on 2 cores, their spin-waits
competing with the event loop and the broker.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor


def set_threads(torch_threads: int, faiss_threads: int) -> None:
    """Pin the numpy BLAS, torch and FAISS thread pools for the calling thread (the BLAS
    limit is process-wide; FAISS's OpenMP count is per thread). torch is configured only
    when something imported it (an encoder saved without ``weights.npz``, converted at
    load): the worker does not load it otherwise."""
    import faiss
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=torch_threads, user_api="blas")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(torch_threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process
            pass
    faiss.omp_set_num_threads(faiss_threads)


def engine_executor(torch_threads: int, faiss_threads: int) -> ThreadPoolExecutor:
    """A one-thread executor whose thread pins the pools (:func:`set_threads`) when it
    starts: the engine's batches run there, one at a time, with the pool sizes asked for."""
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="nexttrack-engine",
        initializer=set_threads,
        initargs=(torch_threads, faiss_threads),
    )
