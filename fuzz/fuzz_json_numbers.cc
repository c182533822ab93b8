// libFuzzer target for reading float arrays back from JSON (csrc/json_numbers.h), which a
// recorder runs on every scores frame a peer sends: any bytes, read as a float array and as an
// object whose "raw" and "smoothed" members are taken out. Checked on every input, under
// AddressSanitizer and UndefinedBehaviorSanitizer:
//   - ReadFloatArray reads nothing past the end; what it accepts is "[" tokens "]", each token
//     one strtod reads whole to the same finite double;
//   - TakeFloatArrays reads nothing past the end; what it accepts keeps every byte but those of
//     the members taken, in order, each member "," "\"key\":" and an array ReadFloatArray
//     accepts, and the rest begins with "{".
// A failed check prints what failed and aborts, so libFuzzer saves the input as a crash.
//
// Build and run: fuzz/run.sh SECONDS json_numbers
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_check.h"
#include "json_numbers.h"

namespace {

// The values of "[a,b,...]" as strtod reads each token (the array already accepted).
std::vector<double> ByStrtod(const char *begin, const char *end) {
  std::vector<double> out;
  std::string token;
  for (const char *p = begin + 1; p < end; ++p) {
    if (*p == ',' || *p == ']') {
      char *stop = nullptr;
      out.push_back(std::strtod(token.c_str(), &stop));
      CHECK(*stop == '\0', "strtod stopped early in %s", token.c_str());
      token.clear();
    } else {
      token.push_back(*p);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // a copy of its own size: AddressSanitizer sees a read past the end
  std::vector<char> bytes(data, data + size);
  const char *begin = bytes.data();
  const char *end = begin + size;

  std::vector<double> values;
  const char *after = streamtag::ReadFloatArray(begin, end, values);
  if (after != nullptr) {
    CHECK(after > begin && after <= end && after[-1] == ']', "array end");
    const std::vector<double> expected = ByStrtod(begin, after);
    CHECK(values.size() == expected.size() && !values.empty(), "%zu values, %zu tokens",
          values.size(), expected.size());
    for (size_t i = 0; i < values.size(); ++i) {
      CHECK(std::isfinite(values[i]), "value %zu not finite", i);
      CHECK(std::memcmp(&values[i], &expected[i], sizeof(double)) == 0,
            "value %zu: %.17g, strtod %.17g", i, values[i], expected[i]);
    }
  }

  const std::vector<std::string_view> keys = {"raw", "smoothed"};
  std::vector<std::vector<double>> arrays;
  std::string rest;
  if (streamtag::TakeFloatArrays(begin, size, keys, arrays, rest)) {
    CHECK(!rest.empty() && rest[0] == '{', "rest begins with {");
    CHECK(arrays.size() == keys.size(), "one array per key");
    for (const auto &array : arrays) CHECK(!array.empty(), "an empty array taken");
    // rest is the input less one member per key: some choice of a ",\"key\":[...]" span
    // per key, each an array ReadFloatArray reads to the values given, removed, gives it
    std::vector<std::vector<std::pair<size_t, size_t>>> spans(keys.size());
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::string head = ",\"" + std::string(keys[k]) + "\":";
      for (size_t at = 0; at + head.size() < size; ++at) {
        if (std::memcmp(begin + at, head.data(), head.size()) != 0) continue;
        std::vector<double> again;
        const char *member_end = streamtag::ReadFloatArray(begin + at + head.size(), end, again);
        if (member_end != nullptr && again.size() == arrays[k].size() &&
            std::memcmp(again.data(), arrays[k].data(), again.size() * sizeof(double)) == 0) {
          spans[k].push_back({at, static_cast<size_t>(member_end - begin)});
        }
      }
    }
    bool found = false;
    for (const auto &first_key : spans[0]) {
      for (const auto &second_key : spans[1]) {
        auto a = first_key;
        auto b = second_key;
        if (b.first < a.first) std::swap(a, b);  // either key first
        if (found || a.second > b.first) continue;  // apart
        const std::string kept = std::string(begin, a.first) +
                                 std::string(begin + a.second, b.first - a.second) +
                                 std::string(begin + b.second, size - b.second);
        found = kept == rest;
      }
    }
    CHECK(found, "rest (%zu bytes) is not the input (%zu) less one member per key",
          rest.size(), size);
  }
  return 0;
}
