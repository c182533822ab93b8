// What the C++ tests share: Check and CheckThrows count what passed and print what failed,
// Summary ends a test program, Noise makes the test signals. Each tests/cpp/test_<header>.cc
// is one program (one CTest test) for one header of the core; CI builds them with
// AddressSanitizer + UndefinedBehaviorSanitizer (cmake -DSTREAMTAG_CORE_TESTS=ON
// -DSTREAMTAG_SANITIZE=ON), so they exercise every path the Python tests do.
#ifndef STREAMTAG_TESTS_CPP_CHECK_H_
#define STREAMTAG_TESTS_CPP_CHECK_H_

#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace streamtag_test {

inline int passed = 0, failed = 0;

inline void Check(bool ok, const std::string &what) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

template <typename E>
void CheckThrows(const std::function<void()> &fn, const std::string &what) {
  try {
    fn();
  } catch (const E &) {
    ++passed;
    return;
  } catch (...) {
  }
  ++failed;
  std::printf("FAILED (no or wrong exception): %s\n", what.c_str());
}

// The counts, and the exit status of a test program: 0 when nothing failed.
inline int Summary(const char *program) {
  std::printf("%s: %d passed, %d failed\n", program, passed, failed);
  return failed == 0 ? 0 : 1;
}

inline std::vector<float> Noise(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  std::vector<float> x(n);
  for (float &v : x) v = dist(rng);
  return x;
}

}  // namespace streamtag_test

#endif  // STREAMTAG_TESTS_CPP_CHECK_H_
