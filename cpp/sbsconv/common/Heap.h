#pragma once

namespace sbsconv {

// Note [Large blocks stay in the heap]
// A conversion allocates and frees blocks of tens to hundreds of megabytes for every batch:
// frames, depth, the eyes, the model's activations (a 1080p frame as floats is 25 MB, the
// depth head's upsampled features for a batch of two about 120 MB at input 518). glibc's malloc serves a
// block above its mmap threshold (dynamic, at most 32 MB) with a fresh mmap and returns it to
// the system when freed, and trims the heap's free top beyond twice that threshold, so the
// next batch's block is new memory again: every page of it a page fault that the kernel
// zeroes. On two cores at 1080p that was 14 % of a conversion's samples (6-8 million faults
// for 30 frames); without it the depth model alone runs 1.16-1.3x faster, a conversion in a
// fresh process 1.08-1.14x (benchmarks/RESULTS.md, "large blocks stay in the heap").
//
// So the import of sbsconv's native module (and, should a process reach a model or an engine
// another way, its first one) raises glibc's mmap and trim thresholds to 1 GiB: blocks up to
// that size are carved from the heap and, freed, stay there for the next batch. It also sets
// one arena for all threads (arena_max 1): a thread's own arena grows in heaps of 64 MB, maps
// every larger block afresh whatever the thresholds, and deletes a heap that empties, so the
// depth stage, which runs the model on a thread of its own, faulted in the depth head's 122 MB
// features of every batch of two at input 518 (2.6-3.5 million faults in 45 frames at 720p
// against 0.4 million in one arena; a conversion in a fresh process 1.04x faster,
// benchmarks/RESULTS.md). glibc fixes the limit when a process's ninth arena would be made and
// keeps the arenas threads already have, and an exited thread's arena goes to the next new
// thread: hence at import, before the conversions' threads exist.
//
// Even in one arena, malloc's reuse of a freed block is a heuristic: LibTorch asks for its blocks
// 64-byte aligned, so a freed block is a little short of the next same-sized request's carve
// unless it merged with its neighbours, and the small allocations a thread makes between two
// batches (a Python thread's above all) land beside it and keep it from merging. A Python
// thread's 96 MB blocks were new memory every round in 6-7 of 10 fresh processes on an AMD
// EPYC (tests/python/test_heap.py, 2026-12-07). So the import also wraps LibTorch's CPU
// allocator (c10::SetCPUAllocator, at the default's priority): blocks of 16 MB or more are
// kept when freed (up to 1 GiB and 32 blocks) and handed out again for a request they hold
// with at most a quarter to spare; a request that none fits first returns the larger kept
// blocks to malloc, which can carve it from them. Smaller blocks are the default allocator's.
//
// What is free is handed back to the system at the end of every conversion (release_free_heap:
// the kept blocks, then malloc_trim), so a notebook or web-app process does not keep a run's
// peak. A process whose user chose malloc's settings (GLIBC_TUNABLES naming glibc.malloc, or
// any MALLOC_* environment variable) keeps them and LibTorch's own allocator; other C
// libraries are left alone.
//
// Threading: both functions are thread-safe.

// Applies the thresholds and LibTorch's block reuse once per process (later calls do nothing).
// Returns whether this process runs with them (false: not glibc, or the user's own settings).
bool keep_large_blocks_in_heap();

// Returns the kept blocks and the heap's free memory to the system (where
// keep_large_blocks_in_heap applied).
void release_free_heap();

} // namespace sbsconv
