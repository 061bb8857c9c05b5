/* Time the first write to each 4 KiB page of a fresh anonymous mapping of N MiB (huge
 * pages off), then of a second fresh mapping after unmapping the first.
 * Usage: gcc -O2 -o first-touch first-touch.c && ./first-touch 2500 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
int main(int argc, char **argv) {
  size_t n = (size_t)atol(argv[1]) << 20;
  struct timespec a, b;
  char *p = mmap(0, n, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  madvise(p, n, MADV_NOHUGEPAGE);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%zu MiB: %.3f s, %.2f us per 4K page\n", n >> 20, s, s * 1e6 / (n / 4096));
  munmap(p, n);
  p = mmap(0, n, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  clock_gettime(CLOCK_MONOTONIC, &b);
  s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  printf("again: %.3f s, %.2f us per 4K page\n", s, s * 1e6 / (n / 4096));
  return 0;
}
