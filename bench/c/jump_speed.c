/* Speed of the jump consistent hash as the paper prints it (Lamping & Veach 2014, fig. 1),
 * compiled by gcc, so Rust's figure has a baseline measured on the same machine and run.
 *
 *   gcc -O2 -o /tmp/jump_speed bench/c/jump_speed.c && /tmp/jump_speed 5000
 *
 * Prints the median over 11 rounds of ns per lookup for 4M independent random keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int32_t jump(uint64_t key, int32_t num_buckets) {
    int64_t b = -1, j = 0;
    while (j < num_buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int32_t)b;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int32_t buckets = argc > 1 ? atoi(argv[1]) : 5000;
    enum { KEYS = 1 << 22, ROUNDS = 11 };
    uint64_t *keys = malloc(sizeof(uint64_t) * KEYS);
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < KEYS; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17; /* xorshift64 */
        keys[i] = s;
    }
    double ns[ROUNDS];
    volatile int64_t sink = 0;
    for (int r = 0; r < ROUNDS; r++) {
        struct timespec t0, t1;
        int64_t acc = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < KEYS; i++) acc += jump(keys[i], buckets);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        sink += acc;
        ns[r] = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / KEYS;
    }
    qsort(ns, ROUNDS, sizeof(double), cmp);
    printf("jump (paper's C, gcc), %d buckets: median %.1f ns per lookup (min %.1f)\n",
           buckets, ns[ROUNDS / 2], ns[0]);
    free(keys);
    return 0;
}
