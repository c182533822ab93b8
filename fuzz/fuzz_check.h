// The fuzz targets' check: on failure, what failed, then abort, so that libFuzzer saves the
// input as a crash.
#ifndef STREAMTAG_FUZZ_CHECK_H_
#define STREAMTAG_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      std::fprintf(stderr, "check failed: %s: ", #cond);   \
      std::fprintf(stderr, __VA_ARGS__);                   \
      std::fprintf(stderr, "\n");                          \
      std::abort();                                        \
    }                                                      \
  } while (0)

#endif  // STREAMTAG_FUZZ_CHECK_H_
