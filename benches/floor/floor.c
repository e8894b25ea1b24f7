// Where the hook's time goes, and what the candidate ring protocols cost,
// measured side by side in one process and interleaved (issue 14).
//
// Every variant writes 64-byte slots shaped like memtrack's (a state word
// plus seven payload words) into a ring of --capacity slots, and stacks one
// cost on the previous variant: plain stores, + rdtsc (the floor), + one
// `lock xadd` on a per-process counter (today's live counter), + a claim
// CAS on the slot state (today's recipe); then the same claim with a paced
// consumer thread on the other core, once freeing every slot by rewriting
// its state (today's Vyukov-style protocol) and once publishing its position
// once per batch (writers compare with a cached copy of it); prefetchw of
// the slot a few tickets ahead; a shared `fetch_add` ticket instead of the
// slot CAS; per-thread sub-rings (SPSC: no locked instruction at all), with
// either consumer; and a consumer that lags (takes a batch only once its
// last slot is published). Each variant runs with 1 and 2 writer threads.
//
// The slot state is `ticket << 2 | phase` (EMPTY 0, CLAIMED 1, FULL 2), so
// a slot is claimable for ticket t when it holds EMPTY(t) (today: the
// consumer wrote it) or, where the consumer publishes its position instead,
// any state of an older ticket once t < head + capacity.
//
// The consumer is paced the way `Consumer::pause_if_idle` paces memtrack's:
// it takes up to 4096 records per batch until a batch comes back empty, and
// if it handled fewer than capacity/64 records it sleeps (capacity * 1.5 ns,
// at least 10 us, doubling up to capacity * 16 ns, at most 1 ms), so it stays
// well behind the writers instead of polling the slot they are filling.
// Writers never drop: one that finds the ring full spins until the consumer
// frees a slot (counted in the `full` column).
//
// Output: per variant and thread count, the median, min and max over the
// repetitions of ns per event per thread (the slowest thread's time divided
// by its events), and the median's ratio to the floor (rdtsc + stores, one
// thread) of the same run.
//
// usage: floor [--events N] [--reps R] [--capacity C] [--prefetch D] [--threads "1 2"]
// Built with gcc -O2 by scripts/bench-floor.sh; x86-64 only (rdtsc, prefetchw).

#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <x86intrin.h>

#define STATE(ticket, phase) ((ticket) << 2 | (phase))
#define TICKET(state) ((state) >> 2)
enum { EMPTY = 0, CLAIMED = 1, FULL = 2 };
#define MAX_WRITERS 2
#define BATCH 4096
#define CONSUMER_PREFETCH 16 // as memtrack's consumer

typedef struct {
    _Atomic uint64_t state;
    uint64_t payload[7];
} __attribute__((aligned(64))) slot_t;
_Static_assert(sizeof(slot_t) == 64, "one slot is one cache line");

// Each shared word on its own 128-byte pair of lines, as memtrack's header
// (the adjacent-line prefetcher pulls lines in pairs).
typedef struct {
    slot_t* slots;
    _Alignas(128) _Atomic uint64_t tail; // claim hint (CAS) or ticket counter (fetch_add)
    _Alignas(128) _Atomic uint64_t head; // the consumer's published position
    _Alignas(128) uint64_t consumer_next; // the consumer's private cursor
} ring_t;

enum claim { CLAIM_NONE, CLAIM_CAS, CLAIM_FADD };
enum consumer { NO_CONSUMER, FREES_SLOTS, PUBLISHES_HEAD };

typedef struct {
    const char* name;
    int clock;     // per event: 0 none, 1 rdtsc, 2 rdtscp, 3 lfence; rdtsc
    int counter;   // lock xadd on the per-process counter per event
    enum claim claim;
    enum consumer consumer;
    int prefetchw; // prefetchw the slot `prefetch` tickets ahead
    int lag;       // the consumer takes only whole batches (see take_batch)
} variant_t;

// CLAIM_NONE: every writer thread writes its own ring (with no consumer, a
// private buffer: the hardware floor; with one, an SPSC sub-ring).
static const variant_t VARIANTS[] = {
    {"stores only (7 plain + 1 release)", 0, 0, CLAIM_NONE, NO_CONSUMER, 0, 0},
    {"+ rdtsc = FLOOR", 1, 0, CLAIM_NONE, NO_CONSUMER, 0, 0},
    {"+ rdtscp instead (ordered after loads)", 2, 0, CLAIM_NONE, NO_CONSUMER, 0, 0},
    {"+ lfence; rdtsc instead", 3, 0, CLAIM_NONE, NO_CONSUMER, 0, 0},
    {"+ rdtsc + lock xadd counter", 1, 1, CLAIM_NONE, NO_CONSUMER, 0, 0},
    {"+ rdtsc + xadd + claim CAS (today, no reader)", 1, 1, CLAIM_CAS, NO_CONSUMER, 0, 0},
    {"+ rdtsc + claim CAS (no counter, no reader)", 1, 0, CLAIM_CAS, NO_CONSUMER, 0, 0},
    {"today + reader frees slots (with xadd)", 1, 1, CLAIM_CAS, FREES_SLOTS, 0, 0},
    {"CAS claim, reader frees slots", 1, 0, CLAIM_CAS, FREES_SLOTS, 0, 0},
    {"CAS claim, reader frees slots, prefetchw", 1, 0, CLAIM_CAS, FREES_SLOTS, 1, 0},
    {"CAS claim, reader publishes head", 1, 0, CLAIM_CAS, PUBLISHES_HEAD, 0, 0},
    {"CAS claim, reader publishes head, prefetchw", 1, 0, CLAIM_CAS, PUBLISHES_HEAD, 1, 0},
    {"fetch_add ticket, reader publishes head", 1, 0, CLAIM_FADD, PUBLISHES_HEAD, 0, 0},
    {"per-thread SPSC sub-rings, head", 1, 0, CLAIM_NONE, PUBLISHES_HEAD, 0, 0},
    {"per-thread SPSC sub-rings, head, prefetchw", 1, 0, CLAIM_NONE, PUBLISHES_HEAD, 1, 0},
    {"per-thread SPSC sub-rings, head, rdtscp", 2, 0, CLAIM_NONE, PUBLISHES_HEAD, 0, 0},
    {"CAS claim, reader frees slots, reader lags", 1, 0, CLAIM_CAS, FREES_SLOTS, 0, 1},
    {"CAS claim, reader publishes head, reader lags", 1, 0, CLAIM_CAS, PUBLISHES_HEAD, 0, 1},
    {"per-thread SPSC sub-rings, head, reader lags", 1, 0, CLAIM_NONE, PUBLISHES_HEAD, 0, 1},
    {"per-thread SPSC sub-rings, reader frees slots", 1, 0, CLAIM_NONE, FREES_SLOTS, 0, 0},
    {"per-thread SPSC, reader frees slots, lags", 1, 0, CLAIM_NONE, FREES_SLOTS, 0, 1},
};
#define N_VARIANTS (sizeof(VARIANTS) / sizeof(VARIANTS[0]))
#define FLOOR_VARIANT 1

static uint64_t capacity = 1 << 16, mask, events = 2000000, prefetch_distance = 8;
static ring_t rings[MAX_WRITERS];
static _Alignas(128) _Atomic uint64_t live_counter;
static _Alignas(128) _Atomic int writers_done;
static pthread_barrier_t start_line;
static const variant_t* current;
static unsigned n_writers;

static uint64_t clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

// This thread's CPU time: on a machine shared with other work, wall time
// also counts the time slices other processes got while a writer was
// runnable; CPU time does not (but neither does a writer's yield while it
// waits for a full ring, which the `full` column shows instead).
static uint64_t cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

static uint64_t preemptions(void) {
    struct rusage usage;
    getrusage(RUSAGE_THREAD, &usage);
    return (uint64_t)usage.ru_nivcsw;
}

static inline void prefetchw(const void* p) {
    // Fetch the line in exclusive state, ready to be written: the writer's
    // next slots otherwise cost an RFO each, one after another.
    __asm__ volatile("prefetchw %0" ::"m"(*(const char*)p));
}

static inline slot_t* slot_of(ring_t* r, uint64_t ticket) { return &r->slots[ticket & mask]; }

// One step of a writer's wait for a full ring: spin briefly, then leave the
// CPU to the consumer (memtrack's writers sleep on a futex; on a 2-core box
// shared with other work, a writer spinning for a descheduled consumer would
// measure the scheduler).
static inline void wait_step(unsigned* spins) {
    if (++*spins < 64) {
        _mm_pause();
    } else {
        sched_yield();
    }
}

// Waits until ticket t fits in the ring behind the consumer's published
// head; `cached` is this writer's copy of it. Returns 1 if it had to wait.
// Signed: a writer that read a slot's state and was preempted may find the
// consumer already past its ticket (another writer claimed and published
// it); that is "not full", and its CAS will then fail.
static inline int fits(uint64_t t, uint64_t head) { return (int64_t)(t - head) < (int64_t)capacity; }

static inline int wait_for_head(ring_t* r, uint64_t t, uint64_t* cached) {
    if (fits(t, *cached)) return 0;
    // Acquire: pairs with the consumer's Release store of head, so its
    // payload reads of the slot we reuse happened before our stores.
    *cached = atomic_load_explicit(&r->head, memory_order_acquire);
    int waited = 0;
    unsigned spins = 0;
    while (!fits(t, *cached)) {
        waited = 1;
        wait_step(&spins);
        *cached = atomic_load_explicit(&r->head, memory_order_acquire);
    }
    return waited;
}

typedef struct {
    pthread_t thread;
    unsigned index;
    uint64_t elapsed_ns;
    uint64_t cpu_ns;
    uint64_t preempted; // involuntary context switches during the loop
    uint64_t full; // events that found the ring full and waited
} writer_t;

static void* writer_main(void* arg) {
    writer_t* w = arg;
    const variant_t v = *current;
    ring_t* r = v.claim == CLAIM_NONE ? &rings[w->index] : &rings[0];
    uint64_t local_tail = 0, cached_head = 0, full = 0;
    pthread_barrier_wait(&start_line);
    uint64_t preempted = preemptions(), cpu_start = cpu_ns(), start = now_ns();
    for (uint64_t i = 0; i < events; ++i) {
        uint64_t ts = i;
        if (v.clock == 1) {
            ts = __rdtsc();
        } else if (v.clock == 2) {
            unsigned aux;
            ts = __rdtscp(&aux);
        } else if (v.clock == 3) {
            _mm_lfence();
            ts = __rdtsc();
        }
        uint64_t count = 0;
        if (v.counter) {
            // An alloc adds, a free subtracts: the live counter's RMW.
            count = atomic_fetch_add_explicit(&live_counter, (i & 1) ? -4096 : 4096, memory_order_relaxed);
        }
        uint64_t t;
        slot_t* s;
        if (v.claim == CLAIM_NONE) {
            t = local_tail++;
            s = slot_of(r, t);
            if (v.consumer == PUBLISHES_HEAD) full += wait_for_head(r, t, &cached_head);
            if (v.consumer == FREES_SLOTS) {
                // The slot is ours once the consumer wrote EMPTY(t) into it.
                // Acquire: pairs with the consumer's Release store that frees it.
                unsigned spins = 0;
                int waited = 0;
                while (atomic_load_explicit(&s->state, memory_order_acquire) != STATE(t, EMPTY)) {
                    waited = 1;
                    wait_step(&spins);
                }
                full += waited;
            }
        } else if (v.claim == CLAIM_FADD) {
            t = atomic_fetch_add_explicit(&r->tail, 1, memory_order_relaxed);
            full += wait_for_head(r, t, &cached_head);
            s = slot_of(r, t);
        } else {
            // memtrack's claim: start at the tail hint, probe forward past
            // claimed slots, CAS the state of the first claimable one.
            t = atomic_load_explicit(&r->tail, memory_order_acquire);
            int waited = 0;
            unsigned spins = 0;
            for (;;) {
                s = slot_of(r, t);
                uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
                int64_t age = (int64_t)(TICKET(st) - t);
                if (age == 0 && (st & 3) != EMPTY) {
                    ++t; // another writer holds this ticket
                    continue;
                }
                if (age > 0) {
                    // Our ticket is a lap or more behind: catch up past the
                    // slot's ticket, as memtrack's claim does (a hint moved
                    // back by a writer preempted before its hint store would
                    // otherwise send us probing through whole laps).
                    uint64_t hint = atomic_load_explicit(&r->tail, memory_order_acquire);
                    uint64_t past = TICKET(st) - capacity + 1;
                    t = hint > past ? hint : past;
                    continue;
                }
                if (v.consumer == FREES_SLOTS && age < 0) {
                    waited = 1; // last lap's record not freed yet: full
                    wait_step(&spins);
                    continue;
                }
                if (v.consumer == PUBLISHES_HEAD) waited |= wait_for_head(r, t, &cached_head);
                if (atomic_compare_exchange_strong_explicit(&s->state, &st, STATE(t, CLAIMED),
                                                            memory_order_acq_rel, memory_order_acquire))
                    break;
            }
            full += waited;
            atomic_store_explicit(&r->tail, t + 1, memory_order_release);
        }
        if (v.prefetchw) prefetchw(slot_of(r, t + prefetch_distance));
        s->payload[0] = ts;
        s->payload[1] = ((uint64_t)w->index << 40) | (i >> 1);
        s->payload[2] = 0x1000 + count;
        s->payload[3] = 4096;
        s->payload[4] = i;
        s->payload[5] = w->index;
        s->payload[6] = i & 1;
        // Release: pairs with the consumer's Acquire load of the state.
        atomic_store_explicit(&s->state, STATE(t, FULL), memory_order_release);
    }
    w->elapsed_ns = now_ns() - start;
    w->cpu_ns = cpu_ns() - cpu_start;
    w->preempted = preemptions() - preempted;
    w->full = full;
    return NULL;
}

static volatile uint64_t consumer_sink;

// Takes up to BATCH records of ring r; frees their slots or publishes the
// new head, as the variant says. Returns the records taken.
//
// With `lag`, the consumer takes a batch only once the batch's last slot is
// published, so it reads at most one slot line per batch that a writer may
// be about to write, instead of chasing the writers to the slot they are
// filling (every line it reads there must come back to the writer's core).
static uint64_t take_batch(ring_t* r, enum consumer how, int lag) {
    uint64_t start = r->consumer_next, t = start, sum = 0;
    if (lag) {
        uint64_t last = start + BATCH - 1;
        if (atomic_load_explicit(&slot_of(r, last)->state, memory_order_acquire) != STATE(last, FULL)) return 0;
    }
    while (t - start < BATCH) {
        __builtin_prefetch(slot_of(r, t + CONSUMER_PREFETCH), 0, 3);
        slot_t* s = slot_of(r, t);
        // Acquire: pairs with the writer's Release store of FULL.
        if (atomic_load_explicit(&s->state, memory_order_acquire) != STATE(t, FULL)) break;
        for (int k = 0; k < 7; ++k) sum += s->payload[k];
        ++t;
    }
    if (t == start) return 0;
    consumer_sink += sum;
    if (how == FREES_SLOTS) {
        for (uint64_t u = start; u != t; ++u) {
            // Release: our payload reads happen before the next lap's
            // writer stores; pairs with the writer's Acquire load.
            atomic_store_explicit(&slot_of(r, u)->state, STATE(u + capacity, EMPTY), memory_order_release);
        }
    }
    // Both designs publish the position once per batch (today's consumer
    // does it in its progress seqlock). Release: pairs with the writers'
    // Acquire load in wait_for_head.
    atomic_store_explicit(&r->head, t, memory_order_release);
    r->consumer_next = t;
    return t - start;
}

static void* consumer_main(void* arg) {
    (void)arg;
    const variant_t v = *current;
    unsigned n_rings = v.claim == CLAIM_NONE ? n_writers : 1;
    uint64_t shortest = capacity * 3 / 2, longest = capacity * 16, pause;
    if (shortest < 10000) shortest = 10000;
    if (shortest > 1000000) shortest = 1000000;
    if (longest < shortest) longest = shortest;
    if (longest > 1000000) longest = 1000000;
    pause = shortest;
    for (;;) {
        int done = atomic_load_explicit(&writers_done, memory_order_acquire);
        uint64_t handled = 0, batch;
        do {
            batch = 0;
            // Once the writers are done, the rest is taken whatever its size.
            for (unsigned k = 0; k < n_rings; ++k) batch += take_batch(&rings[k], v.consumer, v.lag && !done);
            handled += batch;
        } while (batch != 0);
        if (done) break; // drained after the writers finished
        if (handled >= (capacity / 64 ? capacity / 64 : 1)) {
            pause = shortest;
            continue;
        }
        if (pause < shortest) pause = shortest;
        if (pause > longest) pause = longest;
        struct timespec ts = {0, (long)pause};
        nanosleep(&ts, NULL);
        pause *= 2;
    }
    return NULL;
}

typedef struct {
    double wall_ns; // per event per thread, the slowest thread's wall time
    double cpu_ns;  // the same in thread CPU time
    uint64_t full;  // events that found the ring full and waited
    uint64_t preempted;
} result_t;

// One measurement of variant v with n writer threads.
static result_t measure(const variant_t* v, unsigned n) {
    current = v;
    n_writers = n;
    for (unsigned k = 0; k < MAX_WRITERS; ++k) {
        ring_t* r = &rings[k];
        for (uint64_t i = 0; i < capacity; ++i) {
            atomic_store_explicit(&r->slots[i].state, STATE(i, EMPTY), memory_order_relaxed);
        }
        atomic_store(&r->tail, 0);
        atomic_store(&r->head, 0);
        r->consumer_next = 0;
    }
    atomic_store(&writers_done, 0);
    pthread_barrier_init(&start_line, NULL, n);
    pthread_t consumer;
    if (v->consumer != NO_CONSUMER) pthread_create(&consumer, NULL, consumer_main, NULL);
    writer_t w[MAX_WRITERS];
    for (unsigned k = 0; k < n; ++k) {
        w[k].index = k;
        pthread_create(&w[k].thread, NULL, writer_main, &w[k]);
    }
    uint64_t slowest = 0, most_cpu = 0;
    result_t result = {0, 0, 0, 0};
    for (unsigned k = 0; k < n; ++k) {
        pthread_join(w[k].thread, NULL);
        if (w[k].elapsed_ns > slowest) slowest = w[k].elapsed_ns;
        if (w[k].cpu_ns > most_cpu) most_cpu = w[k].cpu_ns;
        result.full += w[k].full;
        result.preempted += w[k].preempted;
    }
    atomic_store_explicit(&writers_done, 1, memory_order_release);
    if (v->consumer != NO_CONSUMER) {
        pthread_join(consumer, NULL);
        uint64_t expected = v->claim == CLAIM_NONE ? events : events * n;
        for (unsigned k = 0; k < (v->claim == CLAIM_NONE ? n : 1); ++k) {
            if (rings[k].consumer_next != expected) {
                fprintf(stderr, "floor: variant \"%s\": consumer took %llu of %llu records\n", v->name,
                        (unsigned long long)rings[k].consumer_next, (unsigned long long)expected);
                exit(1);
            }
        }
    }
    pthread_barrier_destroy(&start_line);
    result.wall_ns = (double)slowest / (double)events;
    result.cpu_ns = (double)most_cpu / (double)events;
    return result;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static void print_load(const char* when) {
    char line[256];
    FILE* f = fopen("/proc/loadavg", "r");
    if (f && fgets(line, sizeof line, f)) printf("load average %s: %s", when, line);
    if (f) fclose(f);
}

static void usage(void) {
    fprintf(stderr, "usage: floor [--events N] [--reps R] [--capacity C] [--prefetch D] [--threads \"1 2\"]\n");
    exit(2);
}

int main(int argc, char** argv) {
    unsigned reps = 7, thread_counts[2] = {1, 2}, n_counts = 2;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) usage();
        char* end;
        uint64_t value = strtoull(argv[i + 1], &end, 10);
        if (strcmp(argv[i], "--threads") == 0) {
            n_counts = 0;
            for (char* p = argv[i + 1]; *p && n_counts < 2;) {
                unsigned long n = strtoul(p, &end, 10);
                if (end == p || n < 1 || n > MAX_WRITERS) usage();
                thread_counts[n_counts++] = (unsigned)n;
                p = end;
                while (*p == ' ') ++p;
            }
            if (n_counts == 0) usage();
            continue;
        }
        if (*end != '\0' || end == argv[i + 1]) usage();
        if (strcmp(argv[i], "--events") == 0 && value >= 1) {
            events = value;
        } else if (strcmp(argv[i], "--reps") == 0 && value >= 1) {
            reps = (unsigned)value;
        } else if (strcmp(argv[i], "--capacity") == 0 && value >= 16 && (value & (value - 1)) == 0) {
            capacity = value;
        } else if (strcmp(argv[i], "--prefetch") == 0 && value >= 1) {
            prefetch_distance = value;
        } else {
            usage();
        }
    }
    mask = capacity - 1;
    for (unsigned k = 0; k < MAX_WRITERS; ++k) {
        rings[k].slots = aligned_alloc(4096, capacity * sizeof(slot_t));
        if (!rings[k].slots) {
            fprintf(stderr, "floor: cannot allocate %llu slots\n", (unsigned long long)capacity);
            return 1;
        }
        memset(rings[k].slots, 0, capacity * sizeof(slot_t)); // fault the pages in now
    }

    char model[256] = "unknown";
    FILE* cpuinfo = fopen("/proc/cpuinfo", "r");
    for (char line[512]; cpuinfo && fgets(line, sizeof line, cpuinfo);) {
        char* colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(model, sizeof model, "%s", colon + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (cpuinfo) fclose(cpuinfo);
    printf("floor: cpu \"%s\", %llu events per thread per measurement, %u interleaved repetitions,\n"
           "ring of %llu slots (one per writer thread for the private and sub-ring rows), prefetchw %llu "
           "slots ahead\n",
           model, (unsigned long long)events, reps, (unsigned long long)capacity,
           (unsigned long long)prefetch_distance);
    print_load("before");

    enum { MAX_REPS = 1000 };
    if (reps > MAX_REPS) reps = MAX_REPS;
    static double wall[N_VARIANTS][2][MAX_REPS], cpu[N_VARIANTS][2][MAX_REPS];
    static uint64_t fulls[N_VARIANTS][2], preempted[N_VARIANTS][2];
    for (unsigned rep = 0; rep < reps; ++rep) {
        for (unsigned c = 0; c < n_counts; ++c) {
            for (unsigned v = 0; v < N_VARIANTS; ++v) {
                result_t r = measure(&VARIANTS[v], thread_counts[c]);
                wall[v][c][rep] = r.wall_ns;
                cpu[v][c][rep] = r.cpu_ns;
                fulls[v][c] += r.full;
                preempted[v][c] += r.preempted;
            }
        }
    }
    print_load("after ");

    for (unsigned c = 0; c < n_counts; ++c) {
        for (unsigned v = 0; v < N_VARIANTS; ++v) {
            qsort(wall[v][c], reps, sizeof(double), cmp_double);
            qsort(cpu[v][c], reps, sizeof(double), cmp_double);
        }
    }
    double floor_wall = 0, floor_cpu = 0;
    for (unsigned c = 0; c < n_counts; ++c) {
        if (thread_counts[c] == 1) {
            floor_wall = wall[FLOOR_VARIANT][c][reps / 2];
            floor_cpu = cpu[FLOOR_VARIANT][c][reps / 2];
        }
    }
    printf("%-46s %3s | %7s %7s %7s %7s | %7s %7s | %8s %9s\n", "variant", "thr", "wall ns", "min", "max",
           "x floor", "cpu ns", "x floor", "full", "preempted");
    for (unsigned c = 0; c < n_counts; ++c) {
        for (unsigned v = 0; v < N_VARIANTS; ++v) {
            double *s = wall[v][c], m = s[reps / 2], cm = cpu[v][c][reps / 2];
            printf("%-46s %3u | %7.2f %7.2f %7.2f %7.2f | %7.2f %7.2f | %8llu %9llu\n", VARIANTS[v].name,
                   thread_counts[c], m, s[0], s[reps - 1], floor_wall > 0 ? m / floor_wall : 0.0, cm,
                   floor_cpu > 0 ? cm / floor_cpu : 0.0, (unsigned long long)fulls[v][c],
                   (unsigned long long)preempted[v][c]);
        }
    }
    printf("wall ns: per event per thread, the slowest thread's wall time / its events, median (min, max) over\n"
           "the repetitions; cpu ns: the same in thread CPU time (leaves out the time slices other processes\n"
           "took, and a full writer's yields); x floor: over the one-thread \"+ rdtsc = FLOOR\" median of this\n"
           "run; full: events that found the ring full and waited; preempted: involuntary context switches\n"
           "of the writers, all repetitions (a noise gauge).\n");
    return 0;
}
